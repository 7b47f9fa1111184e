//! The macro's compile-time behaviour: `pass/` must compile, each `fail/` case must fail with its
//! reviewed `.stderr`. After a deliberate change, regenerate with
//! `TRYBUILD=overwrite cargo test -p grid-ui-tests` and review every changed `.stderr` by hand.
//!
//! This suite is a package of its own (`tests/ui/Cargo.toml`) so that trybuild is not a
//! dev-dependency of `grid`: the examples, which build every dev-dependency, stay light.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("pass/*.rs");
    t.compile_fail("fail/*.rs");
}
