//! Finds `#[grid::handler]` traits in Rust sources and describes each method as the macro sees
//! it: wire name, id, shape, and types as written.
//!
//! The rules mirror `grid-macros`: the wire name is `Trait.method` unless `#[grid(name = "…")]`
//! says otherwise; the id is derived from the wire name unless `#[grid(id = N)]` gives it; an
//! argument typed `Sender<T>` makes an output stream, `Receiver<T>` an input stream, and a
//! `&Context` argument is not part of the request.

use std::fmt;
use std::path::{Path, PathBuf};

use quote::ToTokens;
use syn::visit::Visit;

/// What kind of call a handler is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// Request → response.
    Unary,
    /// Request → stream of items.
    ServerStream,
    /// Request + stream of inputs → response.
    ClientStream,
    /// Request + stream of inputs → stream of items.
    TwoWay,
}

impl Shape {
    /// The lock file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Unary => "unary",
            Shape::ServerStream => "server-stream",
            Shape::ClientStream => "client-stream",
            Shape::TwoWay => "two-way",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Shape> {
        Some(match s {
            "unary" => Shape::Unary,
            "server-stream" => Shape::ServerStream,
            "client-stream" => Shape::ClientStream,
            "two-way" => Shape::TwoWay,
            _ => return None,
        })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One handler as declared in the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// The wire name, e.g. `Locker.lock`.
    pub wire_name: String,
    /// The id on the wire.
    pub id: u32,
    /// The shape.
    pub shape: Shape,
    /// The request type as written (a tuple when there are several request arguments).
    pub request: String,
    /// The input item type (`Receiver<T>`), if any.
    pub input: Option<String>,
    /// The output item type (`Sender<T>`), if any.
    pub output: Option<String>,
    /// The return type as written.
    pub response: String,
    /// Where it is declared, for messages.
    pub location: String,
}

/// The id of a wire name: 32-bit FNV-1a, 0 mapped to 1. Must equal
/// `grid_core::HandlerId::from_wire_name`; a test pins known values.
pub fn id_of(wire_name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in wire_name.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// A source file that could not be read or parsed.
#[derive(Debug)]
pub struct ScanError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// Every `.rs` file under `dir`, sorted, for a stable result.
pub(crate) fn rust_files(dir: &Path) -> Result<Vec<PathBuf>, ScanError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| ScanError {
            path: d.clone(),
            message: e.to_string(),
        })?;
        for entry in entries {
            let path = entry
                .map_err(|e| ScanError {
                    path: d.clone(),
                    message: e.to_string(),
                })?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The handlers declared in one file.
pub(crate) fn scan_file(path: &Path) -> Result<Vec<Handler>, ScanError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScanError {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let file = syn::parse_file(&text).map_err(|e| ScanError {
        path: path.to_path_buf(),
        message: format!("does not parse: {e}"),
    })?;
    let mut v = Finder {
        path,
        found: Vec::new(),
    };
    v.visit_file(&file);
    Ok(v.found)
}

struct Finder<'a> {
    path: &'a Path,
    found: Vec<Handler>,
}

impl<'ast> Visit<'ast> for Finder<'_> {
    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        if t.attrs.iter().any(is_handler_attr) {
            for item in &t.items {
                if let syn::TraitItem::Fn(f) = item {
                    self.found.push(describe(self.path, &t.ident, f));
                }
            }
        }
        syn::visit::visit_item_trait(self, t);
    }
}

fn is_handler_attr(a: &syn::Attribute) -> bool {
    let segs: Vec<String> = a
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    segs == ["grid", "handler"] || segs == ["handler"]
}

/// `#[grid(name = "…", id = N, …)]` keys the lock cares about.
fn grid_keys(attrs: &[syn::Attribute]) -> (Option<String>, Option<u32>) {
    let (mut name, mut id) = (None, None);
    for a in attrs.iter().filter(|a| a.path().is_ident("grid")) {
        // Unknown keys are the macro's business; the lock only reads these two.
        let _ = a.parse_nested_meta(|m| {
            if m.path.is_ident("name") {
                let s: syn::LitStr = m.value()?.parse()?;
                name = Some(s.value());
            } else if m.path.is_ident("id") {
                let n: syn::LitInt = m.value()?.parse()?;
                id = n.base10_parse().ok();
            } else if m.input.peek(syn::Token![=]) {
                let _: syn::Expr = m.value()?.parse()?;
            }
            Ok(())
        });
    }
    (name, id)
}

fn last_segment(ty: &syn::Type) -> Option<&syn::PathSegment> {
    match ty {
        syn::Type::Path(p) => p.path.segments.last(),
        _ => None,
    }
}

fn generic_arg(seg: &syn::PathSegment) -> Option<String> {
    match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) => a.args.first().map(tokens),
        _ => None,
    }
}

fn tokens(t: &impl ToTokens) -> String {
    // Token spacing normalised: `Vec < u8 >` → `Vec<u8>`, so formatting changes do not count.
    let s = t.to_token_stream().to_string();
    let mut out = String::with_capacity(s.len());
    for part in s.split(' ') {
        let glue = matches!(part, "<" | ">" | "," | "::" | ")" | "]" | ">>")
            || out.ends_with('<')
            || out.ends_with("::")
            || out.ends_with('(')
            || out.ends_with('[')
            || out.ends_with('&');
        if !out.is_empty() && !glue {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

fn describe(path: &Path, trait_ident: &syn::Ident, f: &syn::TraitItemFn) -> Handler {
    let method = f.sig.ident.to_string();
    let (name, explicit_id) = grid_keys(&f.attrs);
    let wire_name = name.unwrap_or_else(|| format!("{trait_ident}.{method}"));
    let mut request = Vec::new();
    let (mut input, mut output) = (None, None);
    for arg in &f.sig.inputs {
        let syn::FnArg::Typed(pt) = arg else {
            continue;
        };
        let ty = &*pt.ty;
        if let syn::Type::Reference(r) = ty {
            if last_segment(&r.elem).is_some_and(|s| s.ident == "Context") {
                continue;
            }
        }
        match last_segment(ty) {
            Some(s) if s.ident == "Sender" => output = generic_arg(s),
            Some(s) if s.ident == "Receiver" => input = generic_arg(s),
            _ => request.push(tokens(ty)),
        }
    }
    let request = match request.len() {
        0 => "()".to_owned(),
        1 => request.remove(0),
        _ => format!("({})", request.join(", ")),
    };
    let response = match &f.sig.output {
        syn::ReturnType::Default => "()".to_owned(),
        syn::ReturnType::Type(_, t) => tokens(t),
    };
    let shape = match (&input, &output) {
        (None, None) => Shape::Unary,
        (None, Some(_)) => Shape::ServerStream,
        (Some(_), None) => Shape::ClientStream,
        (Some(_), Some(_)) => Shape::TwoWay,
    };
    Handler {
        id: explicit_id.unwrap_or_else(|| id_of(&wire_name)),
        wire_name,
        shape,
        request,
        input,
        output,
        response,
        location: format!("{}: {trait_ident}::{method}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_runtime_derivation() {
        // Same values as grid_core::ids tests: a change here renumbers every handler.
        assert_eq!(id_of(""), 0x811c_9dc5);
        assert_eq!(id_of("a"), 0xe40c_292c);
    }

    #[test]
    fn methods_are_described_as_the_macro_sees_them() {
        let src = r#"
            #[grid::handler]
            pub trait Locker {
                async fn lock(&self, args: LockArgs) -> Result<bool, LockError>;
                #[grid(name = "Locker.watch_v1")]
                async fn watch(&self, ctx: &grid::Context, f: Filter, out: grid::Sender<Event>) -> Result<(), E>;
                #[grid(id = 77, out_capacity = 8)]
                async fn refresh(&self, a: Vec<Option<u8>>, b: u32, input: grid::Receiver<Ping>, out: Sender<Pong>) -> Result<(), E>;
            }
            trait NotAService { async fn x(&self); }
        "#;
        let dir = std::env::temp_dir().join(format!("grid-build-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let file = dir.join("lib.rs");
        std::fs::write(&file, src).expect("write");
        let hs = scan_file(&file).expect("parses");
        assert_eq!(hs.len(), 3);
        assert_eq!(hs[0].wire_name, "Locker.lock");
        assert_eq!(hs[0].id, id_of("Locker.lock"));
        assert_eq!(
            (hs[0].shape, hs[0].request.as_str()),
            (Shape::Unary, "LockArgs")
        );
        assert_eq!(hs[0].response, "Result<bool, LockError>");
        assert_eq!(hs[1].wire_name, "Locker.watch_v1");
        assert_eq!(hs[1].shape, Shape::ServerStream);
        assert_eq!(hs[1].output.as_deref(), Some("Event"));
        assert_eq!(hs[1].request, "Filter");
        assert_eq!(hs[2].id, 77);
        assert_eq!(hs[2].shape, Shape::TwoWay);
        assert_eq!(hs[2].request, "(Vec<Option<u8>>, u32)");
        std::fs::remove_dir_all(&dir).ok();
    }
}
