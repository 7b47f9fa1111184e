//! The README's first example is a literal copy of `examples/hello.rs`, and its first lines give
//! the two commands.

#[test]
fn readme_embeds_the_hello_example_verbatim() {
    let readme = include_str!("../README.md");
    let hello = include_str!("../examples/hello.rs");
    assert!(
        readme.contains(hello.trim_end()),
        "README.md's first example drifted from examples/hello.rs"
    );
}

#[test]
fn readme_starts_with_the_two_commands() {
    let readme = include_str!("../README.md");
    let head: String = readme.lines().take(15).collect::<Vec<_>>().join("\n");
    assert!(
        head.contains("cargo run --release --example cluster"),
        "{head}"
    );
    assert!(head.contains("cargo test --workspace"), "{head}");
}
