//! grid-build's verdict on the upgrade that the workspace's `tests/mixed_versions.rs` runs over
//! real sockets: the old build of the catalog service (`tests/mixed_versions/old.rs`) is locked,
//! then the new build (`tests/mixed_versions/new.rs`) is checked against that lock. Each change
//! of the step gets its own verdict, pinned in `tests/golden/mixed_versions.txt`:
//!
//! - the defaulted fields added to `Get` and `Item` pass (the lock records the new structure);
//! - the added method `Catalog.list` passes (the lock gains a line);
//! - the retired method `Catalog.count` fails until it is retired with `GRID_UPDATE_LOCK=1`,
//!   which keeps its id reserved.

mod support;

use std::path::Path;

use grid_build::Problem;
use support::{golden, Fixture};

fn version(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/mixed_versions")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the workspace's tests are needed)", path.display()))
}

#[test]
fn the_lock_check_passes_the_compatible_changes_and_stops_at_the_retired_method() {
    let f = Fixture::locked("mixed-versions", &version("old.rs"));
    let old_lock = f.lock();
    let mut out = String::from("step: tests/mixed_versions/old.rs -> new.rs\n\n");

    f.write(&version("new.rs"));
    let err = f
        .run(false)
        .expect_err("a method vanished without being retired");
    assert!(
        matches!(&err.problems[..], [Problem::Removed { handler, .. }] if handler == "Catalog.count"),
        "the retired method is the only problem: {err}"
    );
    assert_eq!(f.lock(), old_lock, "nothing written on failure");
    out.push_str(&format!(
        "plain build: fails\n{}",
        f.redact(&err.to_string())
    ));
    out.push('\n');

    let r = f.run(true).expect("update mode retires it");
    assert_eq!(r.added, ["Catalog.list"], "the added method");
    assert_eq!(r.updated, ["Catalog.get"], "the defaulted fields");
    assert_eq!(r.retired, ["Catalog.count"], "the retired method");
    out.push_str(&format!(
        "GRID_UPDATE_LOCK=1 build: passes\n  added: {:?}\n  updated: {:?}\n  retired: {:?}\n",
        r.added, r.updated, r.retired
    ));
    out.push('\n');

    // With the retirement recorded, the same step passes a plain build: what remains are the
    // compatible changes, which a plain build accepts on its own (see the next assertion).
    let again = f.run(false).expect("a plain build passes now");
    assert!(!again.lock_written);

    // The defaulted fields and the added method alone pass a plain build too.
    let g = Fixture::locked("mixed-versions-compatible", &version("old.rs"));
    let with_count = version("new.rs").replace(
        "    /// New: streams every item",
        "    /// How many items there are.\n    async fn count(&self) -> Result<u64, CatalogError>;\n    /// New: streams every item",
    );
    assert_ne!(with_count, version("new.rs"), "the retired method is back");
    g.write(&with_count);
    let r = g
        .run(false)
        .expect("compatible changes pass without GRID_UPDATE_LOCK");
    assert_eq!(r.added, ["Catalog.list"]);
    assert_eq!(r.updated, ["Catalog.get"]);
    out.push_str(
        "the same step without the retirement: a plain build passes
",
    );
    out.push('\n');

    out.push_str(&format!("lock after the step:\n{}", f.lock()));
    out.push('\n');
    golden("mixed_versions", &out);
}
