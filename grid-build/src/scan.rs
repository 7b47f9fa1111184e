//! Finds `#[grid::handler]` traits in Rust sources and describes each method: wire name, id and
//! shape by the macro's own rules (`grid_wire::syntax`), and the wire structure of its request,
//! items, response and error (resolved through the sources' definitions, [`crate::resolve`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use grid_wire::syntax::{HandlerDecl, Request};
use grid_wire::Shape;

use crate::items::{Index, ModPath};
use crate::resolve::{tokens, Resolver};
use crate::schema::{Content, Def, Prim, Ty, Types};

/// The wire structure of one handler's payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The shape.
    pub shape: Shape,
    /// The request: `()` for no argument, the argument, or a tuple of the arguments.
    pub request: Ty,
    /// The input item (`RequestReceiver<T>`), if any.
    pub input: Option<Ty>,
    /// The output item (`ResponseSender<T>`), if any.
    pub output: Option<Ty>,
    /// The `Ok` type of the result (`()` for handlers with an output stream).
    pub response: Ty,
    /// The `Err` type of the result.
    pub error: Ty,
}

/// A handler's types as written in the sources (for the generated table and for locks written
/// before structure was recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The request type (a tuple when there are several request arguments).
    pub request: String,
    /// The input item type.
    pub input: Option<String>,
    /// The output item type.
    pub output: Option<String>,
    /// The whole return type.
    pub response: String,
}

/// One handler as declared in the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// The wire name, e.g. `Locker.lock`.
    pub wire_name: String,
    /// The id on the wire.
    pub id: u32,
    /// Its payloads' wire structure.
    pub signature: Signature,
    /// Its types as written.
    pub written: Written,
    /// Where it is declared, for messages.
    pub location: String,
}

impl Handler {
    /// The shape.
    pub fn shape(&self) -> Shape {
        self.signature.shape
    }
}

/// The id of a wire name; the same function the macro and the runtime use
/// (`grid_wire::handler_id`).
pub fn id_of(wire_name: &str) -> u32 {
    grid_wire::handler_id(wire_name)
}

/// A source file that could not be read or parsed.
#[derive(Debug)]
pub struct ScanError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// Every handler of the sources and the definitions their types refer to.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) handlers: Vec<Handler>,
    pub(crate) types: Types,
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

/// Reads and parses `file` into `index` as module `module`.
pub(crate) fn add_file(index: &mut Index, file: &Path, module: ModPath) -> Result<(), ScanError> {
    let text = std::fs::read_to_string(file).map_err(|e| ScanError {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let ast = syn::parse_file(&text).map_err(|e| ScanError {
        path: file.to_path_buf(),
        message: format!("does not parse: {e}"),
    })?;
    index.add_file(file, module, &ast);
    Ok(())
}

/// Describes every handler of the index, sorted by wire name.
pub(crate) fn describe_all(index: &Index) -> Scan {
    let mut resolver = Resolver::new(index);
    let mut handlers = Vec::new();
    for t in &index.traits {
        let service = t.item.ident.to_string();
        for item in &t.item.items {
            let syn::TraitItem::Fn(f) = item else {
                continue;
            };
            // Mistakes in `#[grid(...)]` are the macro's to report, with spans.
            let decl = HandlerDecl::read(&service, f, &mut Vec::new());
            handlers.push(describe(&mut resolver, &t.module, &t.file, &service, &decl));
        }
    }
    handlers.sort_by(|a, b| a.wire_name.cmp(&b.wire_name));
    let types = reachable(&handlers, resolver.types);
    Scan { handlers, types }
}

fn describe(
    resolver: &mut Resolver<'_>,
    module: &[String],
    file: &Path,
    service: &str,
    decl: &HandlerDecl<'_>,
) -> Handler {
    let module = module.to_vec();
    let request_ty = match decl.request() {
        Request::Unit => Ty::Prim(Prim::Unit),
        Request::One(t) => resolver.ty(t, &module),
        Request::Tuple(ts) => Ty::Tuple(ts.iter().map(|t| resolver.ty(t, &module)).collect()),
    };
    let request_text = match decl.request() {
        Request::Unit => "()".to_owned(),
        Request::One(t) => tokens(t),
        Request::Tuple(ts) => {
            let parts: Vec<String> = ts.iter().map(tokens).collect();
            format!("({})", parts.join(", "))
        }
    };
    let input = decl.receiver();
    let output = decl.sender();
    let (response, error) = match decl.ret {
        Some((ok, err)) => (resolver.ty(ok, &module), resolver.ty(err, &module)),
        // Not a `Result`: the macro rejects it; describe it as written.
        None => (Ty::Opaque(return_text(decl)), Ty::Prim(Prim::Unit)),
    };
    Handler {
        wire_name: decl.wire_name.clone(),
        id: decl.id,
        signature: Signature {
            shape: decl.shape(),
            request: request_ty,
            input: input.map(|t| resolver.ty(t, &module)),
            output: output.map(|t| resolver.ty(t, &module)),
            response,
            error,
        },
        written: Written {
            request: request_text,
            input: input.map(tokens),
            output: output.map(tokens),
            response: return_text(decl),
        },
        location: format!("{}: {service}::{}", file.display(), decl.ident),
    }
}

fn return_text(decl: &HandlerDecl<'_>) -> String {
    match &decl.original.sig.output {
        syn::ReturnType::Default => "()".to_owned(),
        syn::ReturnType::Type(_, t) => tokens(t),
    }
}

/// Only the definitions the handlers reach (a flattened struct, say, is inlined, not named).
fn reachable(handlers: &[Handler], mut types: Types) -> Types {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&Ty> = Vec::new();
    for h in handlers {
        let s = &h.signature;
        stack.extend([&s.request, &s.response, &s.error]);
        stack.extend(s.input.iter().chain(s.output.iter()));
    }
    let mut keys = Vec::new();
    while let Some(t) = stack.pop() {
        collect_keys(t, &mut keys);
        while let Some(k) = keys.pop() {
            if !seen.insert(k.clone()) {
                continue;
            }
            if let Some(d) = types.get(&k) {
                for t in def_tys(d) {
                    collect_keys(t, &mut keys);
                }
            }
        }
    }
    types.retain(|k, _| seen.contains(k));
    types
}

/// Every key a type refers to directly.
pub(crate) fn collect_keys(t: &Ty, out: &mut Vec<String>) {
    match t {
        Ty::Named(k) => out.push(k.clone()),
        Ty::Option(t) | Ty::Seq(t) | Ty::Array(t, _) => collect_keys(t, out),
        Ty::Map(a, b) | Ty::Result(a, b) => {
            collect_keys(a, out);
            collect_keys(b, out);
        }
        Ty::Tuple(ts) => ts.iter().for_each(|t| collect_keys(t, out)),
        Ty::Prim(_) | Ty::Opaque(_) => {}
    }
}

/// The types a definition holds.
pub(crate) fn def_tys(d: &Def) -> Vec<&Ty> {
    match d {
        Def::Alias(t) => vec![t],
        Def::Struct(s) => s.fields.iter().map(|f| &f.ty).collect(),
        Def::Enum(e) => e
            .variants
            .iter()
            .flat_map(|v| match &v.content {
                Content::Unit => Vec::new(),
                Content::Newtype(t) => vec![t],
                Content::Struct(s) => s.fields.iter().map(|f| &f.ty).collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(src: &str) -> Scan {
        let ast = syn::parse_file(src).expect("parses");
        let mut index = Index::default();
        index.add_file(Path::new("lib.rs"), Vec::new(), &ast);
        describe_all(&index)
    }

    #[test]
    fn methods_are_described_as_the_macro_sees_them() {
        let s = scan(
            r#"
            #[grid::handler]
            pub trait Locker {
                async fn lock(&self, args: LockArgs) -> Result<bool, LockError>;
                #[grid(name = "Locker.watch_v1")]
                async fn watch(&self, ctx: &grid::Context, f: Filter, out: grid::ResponseSender<Event>) -> Result<(), E>;
                #[grid(id = 77, out_capacity = 8)]
                async fn refresh(&self, a: Vec<Option<u8>>, b: u32, input: grid::RequestReceiver<Ping>, out: ResponseSender<Pong>) -> Result<(), E>;
            }
            trait NotAService { async fn x(&self); }
        "#,
        );
        let hs = &s.handlers;
        assert_eq!(hs.len(), 3);
        assert_eq!(hs[0].wire_name, "Locker.lock");
        assert_eq!(hs[0].id, id_of("Locker.lock"));
        assert_eq!(hs[0].shape(), Shape::Unary);
        assert_eq!(hs[0].written.request, "LockArgs");
        assert_eq!(hs[0].written.response, "Result<bool, LockError>");
        assert_eq!(hs[0].signature.response, Ty::Prim(Prim::Bool));
        assert_eq!(hs[0].signature.request, Ty::Opaque("LockArgs".into()));
        assert_eq!(hs[1].id, 77);
        assert_eq!(hs[1].shape(), Shape::TwoWay);
        assert_eq!(hs[1].written.request, "(Vec<Option<u8>>, u32)");
        assert_eq!(
            hs[1].signature.request.to_string(),
            "(seq<option<u8>>, u32)"
        );
        assert_eq!(hs[2].wire_name, "Locker.watch_v1");
        assert_eq!(hs[2].shape(), Shape::ServerStream);
        assert_eq!(hs[2].written.output.as_deref(), Some("Event"));
    }

    #[test]
    fn types_are_resolved_through_modules_uses_and_generics() {
        let s = scan(
            r#"
            use serde::{Deserialize, Serialize};
            mod model {
                use serde::{Deserialize, Serialize};
                #[derive(Serialize, Deserialize)]
                pub struct Page<T> { pub items: Vec<T>, #[serde(default)] pub next: Option<String> }
                #[derive(Serialize, Deserialize)]
                pub struct Entry { pub name: std::string::String, pub size: usize }
                #[derive(Serialize, Deserialize)]
                pub struct Id(pub u64);
            }
            mod api {
                use crate::model::{Entry, Id, Page};
                #[derive(Serialize, Deserialize)]
                #[serde(rename_all = "kebab-case")]
                pub enum Error { NotFound(Id), TooMany { max_count: u32 } }
                #[grid::handler]
                pub trait Store {
                    async fn list(&self, dir: std::path::PathBuf) -> Result<Page<Entry>, Error>;
                }
            }
        "#,
        );
        let sig = &s.handlers[0].signature;
        assert_eq!(sig.request, Ty::Prim(Prim::Str));
        assert_eq!(sig.response.to_string(), "Page<Entry>");
        let text: String = s
            .types
            .iter()
            .map(|(k, d)| crate::schema::render_def(k, d))
            .collect();
        assert_eq!(
            text,
            "type Entry = struct {\n    name: str,\n    size: u64,\n}\n\
             type Error = enum {\n    not-found(Id),\n    too-many { max_count: u32 },\n}\n\
             type Id = u64\n\
             type Page<Entry> = struct {\n    items: seq<Entry>,\n    next: option<str> [default],\n}\n"
                .replace("not-found", "\"not-found\"")
                .replace("too-many", "\"too-many\""),
        );
    }
}
