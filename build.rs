//! Checks the cluster example's handlers against their lock file with grid-build, so a change
//! that would break a rolling upgrade of the example fails the build. Skipped when the example
//! is not present (a packaged copy of this crate).

fn main() {
    let services = std::path::Path::new("examples/cluster/services.rs");
    if !services.exists() {
        return;
    }
    let result = grid_build::Builder::new()
        .source(services)
        .lock_file("examples/cluster/grid.lock")
        .emit_table(true)
        .run();
    if let Err(e) = result {
        panic!("{e}");
    }
}
