//! The macro's compile-time behaviour: `tests/ui/pass` must compile, each `tests/ui/fail` case
//! must fail with its reviewed `.stderr`. After a deliberate change, regenerate with
//! `TRYBUILD=overwrite cargo test --test ui` and review every changed `.stderr` by hand.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
