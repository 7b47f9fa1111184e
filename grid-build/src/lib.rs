//! grid-build: turns "do not remove or change the order of handlers" into a build-time check.
//!
//! Nodes of a cluster are upgraded one at a time, so for a while two builds of every service
//! call each other, in both directions. A handler whose id changes, or whose payloads one build
//! cannot decode from the other, breaks the cluster in the middle of the upgrade. grid-build
//! finds every `#[grid::handler]` trait in a crate's sources and records each handler in a
//! checked-in lock file: wire name, id, shape, and the *wire structure* of its request, stream
//! items, response and error — field names, types and defaults, enum variants, recursively —
//! resolved from the structs and enums of the sources by serde's rules, not from how the types
//! are spelled (`String`, `std::string::String` and `PathBuf` are all a msgpack string). It
//! fails the build when:
//!
//! - an existing handler's id or shape changed;
//! - the old and the new build could not decode each other's values (grid encodes payloads as
//!   msgpack maps with field names): a changed field type, a removed field or a new field
//!   without a default, a renamed field or variant, a new or removed enum variant, a new field
//!   seen by a reader with `deny_unknown_fields`, a changed enum representation. A new field
//!   with `#[serde(default)]` (or an `Option`) and the removal of a field that had a default
//!   pass;
//! - two handlers share an id or a wire name;
//! - a handler disappeared without being retired;
//! - a retired handler's id or wire name is used again.
//!
//! Each failure says what to do. A type whose structure grid-build cannot see — defined in
//! another crate, with a hand-written serde impl, or behind `#[serde(with)]` — is compared as
//! written, and the message says so. The model is checked against rmp-serde itself by the
//! `wire_truth` test.
//!
//! Adding a handler, and any compatible change, passes (the lock is rewritten; commit it).
//! Accepting a breaking change is one explicit step: `GRID_UPDATE_LOCK=1 cargo build` (or
//! [`Builder::update`]), which rewrites the lock and turns removed handlers into `retired` lines
//! that keep their ids reserved. The wire name, id and shape rules are the macro's own
//! (`grid_wire::syntax`), so the lock cannot drift from what the macro generates.
//!
//! In `build.rs` (the user's crate needs nothing beyond `grid`, `grid-build` and `serde`):
//!
//! ```no_run
//! if let Err(e) = grid_build::Builder::new().emit_table(true).run() {
//!     panic!("{e}");
//! }
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

mod check;
mod compat;
mod items;
mod lock;
mod problem;
mod resolve;
mod scan;
pub mod schema;
mod serde_attr;

use std::path::{Path, PathBuf};

pub use compat::{Build, Change, Finding};
pub use grid_wire::Shape;
pub use lock::{parse as parse_lock, render as render_lock, Entry, Lock, Locked};
pub use problem::{Error, Problem};
pub use scan::{id_of, Handler, ScanError, Signature, Written};

use problem::lock_err;

/// The environment variable that accepts changes to the lock.
pub const UPDATE_ENV: &str = "GRID_UPDATE_LOCK";

/// Configures and runs the check.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    sources: Vec<PathBuf>,
    lock: Option<PathBuf>,
    update: Option<bool>,
    table: bool,
}

/// What a successful run found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every handler in the sources, sorted by wire name.
    pub handlers: Vec<Handler>,
    /// Wire names added to the lock by this run.
    pub added: Vec<String>,
    /// Wire names whose recorded structure changed compatibly (or was accepted in update mode).
    pub updated: Vec<String>,
    /// Wire names this run retired (update mode only).
    pub retired: Vec<String>,
    /// True when the lock file was (re)written.
    pub lock_written: bool,
    /// The generated table, when asked for and `OUT_DIR` is set.
    pub table: Option<PathBuf>,
}

impl Builder {
    /// A builder with the defaults: sources under `$CARGO_MANIFEST_DIR/src`, lock file
    /// `$CARGO_MANIFEST_DIR/grid.lock`, update mode from `GRID_UPDATE_LOCK`, no table.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Scans `path` (a file or a directory) instead of `src/`; may be called several times.
    pub fn source(mut self, path: impl Into<PathBuf>) -> Builder {
        self.sources.push(path.into());
        self
    }

    /// Uses `path` as the lock file.
    pub fn lock_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.lock = Some(path.into());
        self
    }

    /// Accepts changes and rewrites the lock (overrides `GRID_UPDATE_LOCK`).
    pub fn update(mut self, update: bool) -> Builder {
        self.update = Some(update);
        self
    }

    /// Also writes `$OUT_DIR/grid_handlers.rs`: a `HANDLERS` table of every handler.
    pub fn emit_table(mut self, emit: bool) -> Builder {
        self.table = emit;
        self
    }

    fn manifest_dir() -> PathBuf {
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// Scans, checks against the lock, and writes the lock (and the table) when allowed.
    ///
    /// # Errors
    /// Every [`Problem`] found; nothing is written then.
    pub fn run(self) -> Result<Report, Error> {
        let in_build_script = std::env::var_os("OUT_DIR").is_some();
        let update = self
            .update
            .unwrap_or_else(|| std::env::var(UPDATE_ENV).is_ok_and(|v| !v.is_empty() && v != "0"));
        let sources = if self.sources.is_empty() {
            vec![Self::manifest_dir().join("src")]
        } else {
            self.sources.clone()
        };
        let lock_path = self
            .lock
            .clone()
            .unwrap_or_else(|| Self::manifest_dir().join("grid.lock"));
        if in_build_script {
            println!("cargo:rerun-if-env-changed={UPDATE_ENV}");
            println!("cargo:rerun-if-changed={}", lock_path.display());
            for s in &sources {
                println!("cargo:rerun-if-changed={}", s.display());
            }
        }

        let scan = scan_all(&sources)?;
        let locked = match std::fs::read_to_string(&lock_path) {
            Ok(text) => {
                lock::parse(&text).map_err(|e| lock_err(format!("{}: {e}", lock_path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Lock::default(),
            Err(e) => return Err(lock_err(format!("{}: {e}", lock_path.display()))),
        };
        let outcome = check::check(&scan, &locked, update)?;
        let text = lock::render(&outcome.lock);
        let old = std::fs::read_to_string(&lock_path).unwrap_or_default();
        let lock_written = text != old;
        if lock_written {
            std::fs::write(&lock_path, &text)
                .map_err(|e| lock_err(format!("cannot write {}: {e}", lock_path.display())))?;
        }
        let table = match (self.table, std::env::var_os("OUT_DIR")) {
            (true, Some(out)) => {
                let path = Path::new(&out).join("grid_handlers.rs");
                std::fs::write(&path, render_table(&scan.handlers))
                    .map_err(|e| lock_err(format!("cannot write {}: {e}", path.display())))?;
                Some(path)
            }
            _ => None,
        };
        Ok(Report {
            handlers: scan.handlers,
            added: outcome.added,
            updated: outcome.updated,
            retired: outcome.retired,
            lock_written,
            table,
        })
    }
}

fn scan_all(sources: &[PathBuf]) -> Result<scan::Scan, Error> {
    let mut index = items::Index::default();
    let mut problems = Vec::new();
    for src in sources {
        // A directory is a crate's source root; a single file is a root module of its own.
        let files = if src.is_dir() {
            scan::rust_files(src).map_err(|e| Error {
                problems: vec![Problem::Source {
                    path: e.path,
                    message: e.message,
                }],
            })?
        } else {
            vec![src.clone()]
        };
        for f in files {
            let module = if src.is_dir() {
                items::module_of_file(src, &f)
            } else {
                Vec::new()
            };
            if let Err(e) = scan::add_file(&mut index, &f, module) {
                problems.push(Problem::Source {
                    path: e.path,
                    message: e.message,
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error { problems });
    }
    Ok(scan::describe_all(&index))
}

/// The generated `HANDLERS` table, formatted.
fn render_table(handlers: &[Handler]) -> String {
    let rows = handlers.iter().map(|h| {
        let (name, id, shape) = (&h.wire_name, h.id, h.shape().as_str());
        let (req, resp) = (&h.written.request, &h.written.response);
        quote::quote! { (#name, #id, #shape, #req, #resp) }
    });
    let file = quote::quote! {
        /// Every handler of this crate: (wire name, id, shape, request type, response type).
        pub const HANDLERS: &[(&str, u32, &str, &str, &str)] = &[#(#rows),*];
    };
    match syn::parse2::<syn::File>(file.clone()) {
        Ok(f) => prettyplease::unparse(&f),
        Err(_) => file.to_string(),
    }
}
