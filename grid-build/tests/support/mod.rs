//! A fixture crate in a temporary directory, and golden-file comparison. Set `GRID_BLESS=1` to
//! rewrite golden files, then review the diff by hand.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use grid_build::{Builder, Report};

/// A throwaway crate: `src/lib.rs` and `grid.lock`, removed on drop.
pub struct Fixture {
    pub dir: PathBuf,
}

impl Fixture {
    /// An empty fixture named after the test case.
    pub fn empty(case: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("grid-build-{case}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).expect("tmp dir");
        Fixture { dir }
    }

    /// A fixture whose lock was written from `src`.
    pub fn locked(case: &str, src: &str) -> Fixture {
        let f = Fixture::empty(case);
        f.write(src);
        f.run(false).expect("the base locks cleanly");
        f
    }

    pub fn write(&self, src: &str) {
        std::fs::write(self.dir.join("src/lib.rs"), src).expect("write source");
    }

    pub fn run(&self, update: bool) -> Result<Report, grid_build::Error> {
        Builder::new()
            .source(self.dir.join("src"))
            .lock_file(self.dir.join("grid.lock"))
            .update(update)
            .run()
    }

    pub fn lock(&self) -> String {
        std::fs::read_to_string(self.dir.join("grid.lock")).expect("lock exists")
    }

    pub fn set_lock(&self, text: &str) {
        std::fs::write(self.dir.join("grid.lock"), text).expect("write lock");
    }

    /// `s` with the fixture's directory replaced by `$FIXTURE`.
    pub fn redact(&self, s: &str) -> String {
        s.replace(&self.dir.display().to_string(), "$FIXTURE")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lock text without its comment lines (the header is the same in every lock).
pub fn without_comments(lock: &str) -> String {
    lock.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Compares `actual` with `tests/golden/<case>.txt`.
pub fn golden(case: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{case}.txt"));
    if std::env::var_os("GRID_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("golden dir");
        std::fs::write(&path, actual).expect("bless");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing {}; run with GRID_BLESS=1 and review",
            path.display()
        )
    });
    assert_eq!(actual, expected, "golden file {} differs", path.display());
}
