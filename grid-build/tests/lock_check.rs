//! Golden-file tests of the lock's handler rules: a fixture crate is locked, then changed, then
//! checked again; the resulting lock text or error message is compared with
//! `tests/golden/<case>.txt`. The structural rules have their own suite (`structural.rs`).

mod support;

use support::{golden, Fixture};

const BASE: &str = r#"
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct LockArgs {
    pub resource: String,
    pub owner: String,
}

#[derive(Serialize, Deserialize)]
pub enum LockError {
    Busy,
}

#[derive(Serialize, Deserialize)]
pub struct Filter {
    pub prefix: String,
}

#[derive(Serialize, Deserialize)]
pub struct Event {
    pub resource: String,
    pub held: bool,
}

#[grid::handler]
pub trait Locker {
    /// Take a lock.
    async fn lock(&self, args: LockArgs) -> Result<bool, LockError>;
    /// Watch events.
    async fn watch(&self, filter: Filter, out: grid::ResponseSender<Event>) -> Result<(), LockError>;
}
"#;

fn base(case: &str) -> Fixture {
    let f = Fixture::locked(case, BASE);
    golden("base_lock", &f.lock());
    f
}

#[test]
fn adding_a_method_passes_and_the_lock_gains_a_line() {
    let f = base("add");
    f.write(&BASE.replace(
        "    /// Watch events.",
        "    async fn unlock(&self, args: LockArgs) -> Result<(), LockError>;\n    /// Watch events.",
    ));
    let r = f.run(false).expect("adding passes");
    assert_eq!(r.added, vec!["Locker.unlock"]);
    assert!(r.updated.is_empty());
    assert!(r.lock_written);
    golden("add_method", &f.lock());
}

#[test]
fn changing_an_argument_to_a_type_outside_the_sources_fails_compared_by_name() {
    let f = base("argtype");
    f.write(&BASE.replace("args: LockArgs", "args: other_crate::LockArgs"));
    let before = f.lock();
    let err = f.run(false).expect_err("a type change breaks old peers");
    let msg = f.redact(&err.to_string());
    assert!(
        msg.contains("`LockArgs`") && msg.contains("`other_crate::LockArgs`"),
        "{msg}"
    );
    assert!(msg.contains("compares such types by name"), "{msg}");
    assert_eq!(f.lock(), before, "nothing written on failure");
    golden("change_argument_type", &msg);
}

#[test]
fn changing_a_shape_fails() {
    let f = base("shape");
    f.write(&BASE.replace(
        "filter: Filter, out: grid::ResponseSender<Event>",
        "filter: Filter, input: grid::RequestReceiver<u64>, out: grid::ResponseSender<Event>",
    ));
    let err = f.run(false).expect_err("a shape change breaks old peers");
    golden("change_shape", &f.redact(&err.to_string()));
}

#[test]
fn renaming_a_method_but_keeping_its_wire_name_passes_with_the_same_id() {
    let f = base("rename");
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
fn changing_an_id_fails_and_says_how_to_restore_it() {
    let f = base("idchange");
    f.write(&BASE.replace(
        "    async fn lock(&self",
        "    #[grid(id = 7)]\n    async fn lock(&self",
    ));
    let err = f.run(false).expect_err("a new id breaks old peers");
    let msg = f.redact(&err.to_string());
    assert!(msg.contains("#[grid(id = 3046342382)]"), "{msg}");
    golden("change_id", &msg);
}

#[test]
fn an_id_collision_fails_naming_both_handlers() {
    let f = base("collision");
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
    let f = base("retire");
    let without_watch = BASE.replace(
        "    /// Watch events.\n    async fn watch(&self, filter: Filter, out: grid::ResponseSender<Event>) -> Result<(), LockError>;\n",
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

/// A lock written by grid-build before it recorded structure: the same handlers pass (compared
/// as written) and the lock is rewritten with their structure; a changed type still fails.
#[test]
fn a_lock_from_before_structural_records_is_checked_as_written_then_upgraded() {
    const OLD_LOCK: &str = "\
# Columns: wire name | id | shape | request | input item | output item | response
Locker.lock | 0xb5937eee | unary | LockArgs | - | - | Result<bool, LockError>
Locker.watch | 0x12e1173c | server-stream | Filter | - | Event | Result<(), LockError>
";
    let f = Fixture::empty("legacy");
    f.write(BASE);
    f.set_lock(OLD_LOCK);
    let r = f.run(false).expect("unchanged handlers pass");
    assert!(r.lock_written);
    assert_eq!(r.updated, vec!["Locker.lock", "Locker.watch"]);
    let upgraded = f.lock();
    assert!(upgraded.contains("type LockArgs = struct"), "{upgraded}");

    f.set_lock(OLD_LOCK);
    f.write(&BASE.replace("args: LockArgs", "args: LockRequest"));
    let err = f
        .run(false)
        .expect_err("a type renamed as written fails the old check");
    let msg = f.redact(&err.to_string());
    assert!(msg.contains("compared as written"), "{msg}");
    golden("legacy_lock_changed", &msg);
}
