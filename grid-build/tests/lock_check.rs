//! Golden-file tests: a fixture crate is locked, then changed, then checked again. The resulting
//! lock text or error message is compared with `tests/golden/<case>.txt`.
//! Set `GRID_BLESS=1` to rewrite the golden files (then review the diff by hand).

use std::path::{Path, PathBuf};

use grid_build::{Builder, Report};

const BASE: &str = r#"
use serde::{Deserialize, Serialize};

#[grid::handler]
pub trait Locker {
    /// Take a lock.
    async fn lock(&self, args: LockArgs) -> Result<bool, LockError>;
    /// Watch events.
    async fn watch(&self, filter: Filter, out: grid::Sender<Event>) -> Result<(), LockError>;
}
"#;

struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(case: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("grid-build-{case}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src")).expect("tmp dir");
        let f = Fixture { dir };
        f.write(BASE);
        let first = f.run(false).expect("the base locks cleanly");
        assert_eq!(first.added, vec!["Locker.lock", "Locker.watch"]);
        f
    }

    fn write(&self, src: &str) {
        std::fs::write(self.dir.join("src/lib.rs"), src).expect("write source");
    }

    fn run(&self, update: bool) -> Result<Report, grid_build::Error> {
        Builder::new()
            .source(self.dir.join("src"))
            .lock_file(self.dir.join("grid.lock"))
            .update(update)
            .run()
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.dir.join("grid.lock")).expect("lock exists")
    }

    fn redact(&self, s: &str) -> String {
        s.replace(&self.dir.display().to_string(), "$FIXTURE")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn golden(case: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{case}.txt"));
    if std::env::var_os("GRID_BLESS").is_some() {
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

#[test]
fn adding_a_method_passes_and_the_lock_gains_a_line() {
    let f = Fixture::new("add");
    f.write(&BASE.replace(
        "    /// Watch events.",
        "    async fn unlock(&self, args: LockArgs) -> Result<(), LockError>;\n    /// Watch events.",
    ));
    let r = f.run(false).expect("adding passes");
    assert_eq!(r.added, vec!["Locker.unlock"]);
    assert!(r.lock_written);
    golden("add_method", &f.lock());
}

#[test]
fn changing_an_argument_type_fails_naming_both_types() {
    let f = Fixture::new("argtype");
    f.write(&BASE.replace("args: LockArgs", "args: LockArgsV2"));
    let before = f.lock();
    let err = f.run(false).expect_err("a type change breaks old peers");
    let msg = f.redact(&err.to_string());
    assert!(
        msg.contains("`LockArgs`") && msg.contains("`LockArgsV2`"),
        "{msg}"
    );
    assert_eq!(f.lock(), before, "nothing written on failure");
    golden("change_argument_type", &msg);
}

#[test]
fn changing_a_shape_fails() {
    let f = Fixture::new("shape");
    f.write(&BASE.replace(
        "filter: Filter, out: grid::Sender<Event>",
        "filter: Filter, input: grid::Receiver<Ping>, out: grid::Sender<Event>",
    ));
    let err = f.run(false).expect_err("a shape change breaks old peers");
    golden("change_shape", &f.redact(&err.to_string()));
}

#[test]
fn renaming_a_method_but_keeping_its_wire_name_passes_with_the_same_id() {
    let f = Fixture::new("rename");
    let before = f.lock();
    f.write(&BASE.replace(
        "    async fn lock(&self",
        "    #[grid(name = \"Locker.lock\")]\n    async fn acquire(&self",
    ));
    let r = f.run(false).expect("same wire name, same id");
    assert!(r.added.is_empty());
    assert!(!r.lock_written, "the lock is unchanged");
    assert_eq!(f.lock(), before);
}

#[test]
fn an_id_collision_fails_naming_both_handlers() {
    let f = Fixture::new("collision");
    let id = grid_build::id_of("Locker.lock");
    f.write(&BASE.replace(
        "    /// Watch events.",
        &format!("    #[grid(id = {id})]\n    async fn other(&self, a: u8) -> Result<(), LockError>;\n    /// Watch events."),
    ));
    let err = f.run(false).expect_err("two handlers share an id");
    let msg = f.redact(&err.to_string());
    assert!(
        msg.contains("Locker.lock") && msg.contains("Locker.other"),
        "{msg}"
    );
    golden("id_collision", &msg);
}

#[test]
fn removing_without_retiring_fails_then_retiring_passes_and_reuse_fails() {
    let f = Fixture::new("retire");
    let without_watch = BASE.replace(
        "    /// Watch events.\n    async fn watch(&self, filter: Filter, out: grid::Sender<Event>) -> Result<(), LockError>;\n",
        "",
    );
    f.write(&without_watch);
    let err = f.run(false).expect_err("silent removal is refused");
    assert!(
        err.to_string().contains("no longer in the sources"),
        "{err}"
    );
    let r = f.run(true).expect("update mode retires it");
    assert_eq!(r.retired, vec!["Locker.watch"]);
    golden("retired_lock", &f.lock());
    f.run(false)
        .expect("a retired handler stays retired quietly");
    let id = grid_build::id_of("Locker.watch");
    f.write(&without_watch.replace(
        "    async fn lock(",
        &format!("    #[grid(id = {id})]\n    async fn fresh(&self, a: u8) -> Result<(), LockError>;\n    async fn lock("),
    ));
    let err = f.run(false).expect_err("reusing a retired id is refused");
    golden("reuse_retired_id", &f.redact(&err.to_string()));
}
