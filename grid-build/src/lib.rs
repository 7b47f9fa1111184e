//! grid-build: turns "do not remove or change the order of handlers" into a build-time check.
//!
//! Nodes of a cluster are upgraded one at a time, so for a while two versions of every service
//! talk to each other. A handler whose id or signature changes between those versions breaks the
//! cluster in the middle of the upgrade. grid-build finds every `#[grid::handler]` trait in a
//! crate's sources, records each handler (wire name, id, shape, request, item and response types
//! as written) in a checked-in lock file, and fails the build when:
//!
//! - an existing handler's id changed;
//! - its shape or any of its types changed (a breaking change needs a new wire name);
//! - two handlers share an id or a wire name;
//! - a handler disappeared without being retired;
//! - a retired handler's id or wire name is used again.
//!
//! Adding a handler passes (the lock gains a line). Accepting a deliberate change is one explicit
//! step: `GRID_UPDATE_LOCK=1 cargo build` (or [`Builder::update`]), which rewrites the lock and
//! turns removed handlers into `retired` lines that keep their ids reserved.
//!
//! In `build.rs`:
//!
//! ```no_run
//! if let Err(e) = grid_build::Builder::new().emit_table(true).run() {
//!     panic!("{e}");
//! }
//! ```

mod lock;
mod scan;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub use lock::{parse as parse_lock, render as render_lock, Entry};
pub use scan::{id_of, Handler, ScanError, Shape};

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
    /// Wire names this run retired (update mode only).
    pub retired: Vec<String>,
    /// True when the lock file was (re)written.
    pub lock_written: bool,
    /// The generated table, when asked for and `OUT_DIR` is set.
    pub table: Option<PathBuf>,
}

/// One reason the build fails.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A source file could not be read or parsed.
    Source {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The lock file could not be read, parsed or written.
    Lock {
        /// Why.
        message: String,
    },
    /// Two handlers in the sources share an id or a wire name.
    Collision {
        /// What they share.
        what: String,
        /// Where the first one is.
        first: String,
        /// Where the second one is.
        second: String,
    },
    /// A locked handler's id changed.
    IdChanged {
        /// The handler.
        handler: String,
        /// Where it is.
        location: String,
        /// The locked id.
        old: u32,
        /// The id now.
        new: u32,
    },
    /// A locked handler's shape or a type changed.
    SignatureChanged {
        /// The handler.
        handler: String,
        /// Where it is.
        location: String,
        /// Which part: `shape`, `request type`, ...
        part: &'static str,
        /// As locked.
        old: String,
        /// As written now.
        new: String,
    },
    /// A locked handler is gone from the sources and was not retired.
    Removed {
        /// The handler.
        handler: String,
        /// Its id.
        id: u32,
    },
    /// A retired handler's id or wire name is used again.
    ReusedRetired {
        /// The retired handler.
        retired: String,
        /// Its id.
        id: u32,
        /// The handler reusing it.
        by: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Source { path, message } => write!(f, "{}: {message}", path.display()),
            Problem::Lock { message } => write!(f, "lock file: {message}"),
            Problem::Collision {
                what,
                first,
                second,
            } => write!(
                f,
                "two handlers share {what}: {first} and {second}. Give one of them another \
                 wire name with #[grid(name = \"...\")] or another id with #[grid(id = N)]"
            ),
            Problem::IdChanged {
                handler,
                location,
                old,
                new,
            } => write!(
                f,
                "handler `{handler}` ({location}) changed its id from {old:#010x} to {new:#010x}. \
                 Nodes still running the old build would call the wrong handler during a rolling \
                 upgrade. Restore the id with #[grid(id = {old})], or accept the change with \
                 {UPDATE_ENV}=1 if no running cluster uses it"
            ),
            Problem::SignatureChanged {
                handler,
                location,
                part,
                old,
                new,
            } => write!(
                f,
                "handler `{handler}` ({location}) changed its {part} from `{old}` to `{new}`. \
                 Nodes still running the old build would send or expect `{old}` during a rolling \
                 upgrade. Keep the old method and add the new one under a new wire name, e.g. \
                 #[grid(name = \"{handler}2\")]; or accept the change with {UPDATE_ENV}=1 if no \
                 running cluster uses it"
            ),
            Problem::Removed { handler, id } => write!(
                f,
                "handler `{handler}` ({id:#010x}) is in the lock but no longer in the sources. \
                 Retire it with {UPDATE_ENV}=1 (its id stays reserved), or restore it"
            ),
            Problem::ReusedRetired { retired, id, by } => write!(
                f,
                "{by} reuses the id or wire name of retired handler `{retired}` ({id:#010x}). \
                 Old nodes may still send the retired call; pick another wire name or id (to \
                 really bring it back, delete its `retired` line from the lock by hand)"
            ),
        }
    }
}

/// Why the check failed: every problem found, each saying what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The problems, in a stable order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "grid-build: the handler lock check failed:")?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

fn lock_err(message: String) -> Error {
    Error {
        problems: vec![Problem::Lock { message }],
    }
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

        let handlers = scan_all(&sources)?;
        let locked = match std::fs::read_to_string(&lock_path) {
            Ok(text) => {
                lock::parse(&text).map_err(|e| lock_err(format!("{}: {e}", lock_path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(lock_err(format!("{}: {e}", lock_path.display()))),
        };
        let outcome = check(&handlers, &locked, update)?;
        let text = lock::render(&outcome.entries);
        let old = std::fs::read_to_string(&lock_path).unwrap_or_default();
        let lock_written = text != old;
        if lock_written {
            std::fs::write(&lock_path, &text)
                .map_err(|e| lock_err(format!("cannot write {}: {e}", lock_path.display())))?;
        }
        let table = match (self.table, std::env::var_os("OUT_DIR")) {
            (true, Some(out)) => {
                let path = Path::new(&out).join("grid_handlers.rs");
                std::fs::write(&path, render_table(&handlers))
                    .map_err(|e| lock_err(format!("cannot write {}: {e}", path.display())))?;
                Some(path)
            }
            _ => None,
        };
        Ok(Report {
            handlers,
            added: outcome.added,
            retired: outcome.retired,
            lock_written,
            table,
        })
    }
}

fn scan_all(sources: &[PathBuf]) -> Result<Vec<Handler>, Error> {
    let mut handlers = Vec::new();
    let mut problems = Vec::new();
    for src in sources {
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
            match scan::scan_file(&f) {
                Ok(hs) => handlers.extend(hs),
                Err(e) => problems.push(Problem::Source {
                    path: e.path,
                    message: e.message,
                }),
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error { problems });
    }
    handlers.sort_by(|a, b| a.wire_name.cmp(&b.wire_name));
    Ok(handlers)
}

struct Outcome {
    entries: Vec<Entry>,
    added: Vec<String>,
    retired: Vec<String>,
}

/// The rules, as a pure function of the sources and the lock.
fn check(handlers: &[Handler], locked: &[Entry], update: bool) -> Result<Outcome, Error> {
    let mut problems = Vec::new();

    // Collisions inside the sources fail even in update mode: they can never work.
    let mut by_id: HashMap<u32, &Handler> = HashMap::new();
    let mut by_name: HashMap<&str, &Handler> = HashMap::new();
    for h in handlers {
        if let Some(first) = by_id.insert(h.id, h) {
            problems.push(Problem::Collision {
                what: format!("the id {:#010x}", h.id),
                first: format!("`{}` ({})", first.wire_name, first.location),
                second: format!("`{}` ({})", h.wire_name, h.location),
            });
        }
        if let Some(first) = by_name.insert(&h.wire_name, h) {
            problems.push(Problem::Collision {
                what: format!("the wire name `{}`", h.wire_name),
                first: first.location.clone(),
                second: h.location.clone(),
            });
        }
    }

    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut retired = Vec::new();
    for e in locked {
        if e.is_retired() {
            let reuse = handlers
                .iter()
                .find(|h| h.id == e.id || h.wire_name == e.wire_name);
            if let Some(h) = reuse {
                problems.push(Problem::ReusedRetired {
                    retired: e.wire_name.clone(),
                    id: e.id,
                    by: format!("`{}` ({})", h.wire_name, h.location),
                });
            }
            entries.insert(e.wire_name.clone(), e.clone());
            continue;
        }
        let Some(h) = by_name.get(e.wire_name.as_str()) else {
            if update {
                retired.push(e.wire_name.clone());
                entries.insert(e.wire_name.clone(), e.retired());
            } else {
                problems.push(Problem::Removed {
                    handler: e.wire_name.clone(),
                    id: e.id,
                });
                entries.insert(e.wire_name.clone(), e.clone());
            }
            continue;
        };
        if !update {
            if h.id != e.id {
                problems.push(Problem::IdChanged {
                    handler: h.wire_name.clone(),
                    location: h.location.clone(),
                    old: e.id,
                    new: h.id,
                });
            }
            let now = Entry::from_handler(h);
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
            let parts: [(&'static str, String, String); 5] = [
                (
                    "shape",
                    e.shape.map_or_else(String::new, |s| s.to_string()),
                    h.shape.to_string(),
                ),
                ("request type", e.request.clone(), now.request.clone()),
                ("input item type", opt(&e.input), opt(&now.input)),
                ("output item type", opt(&e.output), opt(&now.output)),
                ("response type", e.response.clone(), now.response.clone()),
            ];
            for (part, old, new) in parts {
                if old != new {
                    problems.push(Problem::SignatureChanged {
                        handler: h.wire_name.clone(),
                        location: h.location.clone(),
                        part,
                        old,
                        new,
                    });
                }
            }
        }
        entries.insert(e.wire_name.clone(), Entry::from_handler(h));
    }
    let mut added = Vec::new();
    for h in handlers {
        if !entries.contains_key(&h.wire_name) {
            added.push(h.wire_name.clone());
            entries.insert(h.wire_name.clone(), Entry::from_handler(h));
        }
    }
    if !problems.is_empty() {
        return Err(Error { problems });
    }
    Ok(Outcome {
        entries: entries.into_values().collect(),
        added,
        retired,
    })
}

/// The generated `HANDLERS` table, formatted.
fn render_table(handlers: &[Handler]) -> String {
    let rows = handlers.iter().map(|h| {
        let (name, id, shape) = (&h.wire_name, h.id, h.shape.as_str());
        let (req, resp) = (&h.request, &h.response);
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
