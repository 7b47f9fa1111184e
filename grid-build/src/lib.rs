//! grid-build: the build-script companion of grid (work in progress).
