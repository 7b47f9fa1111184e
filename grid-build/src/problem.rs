//! Why the check fails: each [`Problem`] names the handler, says what changed and what to do.

use std::fmt;
use std::path::PathBuf;

use crate::compat::{Change, Finding};
use crate::UPDATE_ENV;

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
    /// A locked handler's shape changed, or (for a lock written before structure was recorded)
    /// one of its types as written.
    SignatureChanged {
        /// The handler.
        handler: String,
        /// Where it is.
        location: String,
        /// Which part: `shape`, `request type`, ...
        part: &'static str,
        /// As locked.
        old: String,
        /// As now.
        new: String,
        /// True when the lock predates structural records, so types were compared as written.
        as_written: bool,
    },
    /// A locked handler's payload changed so that the old and the new build cannot decode each
    /// other's values.
    Incompatible {
        /// The handler.
        handler: String,
        /// Where it is.
        location: String,
        /// Which payload: `request`, `input item`, `output item`, `response`, `error`.
        part: &'static str,
        /// What changed, and where in the type.
        finding: Finding,
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

/// The way out common to every structural problem.
fn new_name_or_accept(handler: &str, change: &Change) -> String {
    format!(
        "or serve the new signature under a new wire name, e.g. #[grid(name = \"{handler}2\")]; \
         or accept the change with {UPDATE_ENV}=1 {}",
        change.safe_to_accept()
    )
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
                as_written,
            } => {
                write!(
                    f,
                    "handler `{handler}` ({location}) changed its {part} from `{old}` to `{new}`. \
                     Nodes still running the old build would send or expect `{old}` during a \
                     rolling upgrade"
                )?;
                if *as_written {
                    write!(
                        f,
                        " (this lock was written before grid-build recorded the structure of \
                         types, so they are compared as written; once it passes, the lock is \
                         rewritten with their structure)"
                    )?;
                }
                write!(
                    f,
                    ". Keep the old method and add the new one under a new wire name, e.g. \
                     #[grid(name = \"{handler}2\")]; or accept the change with {UPDATE_ENV}=1 if \
                     no running cluster uses it"
                )
            }
            Problem::Incompatible {
                handler,
                location,
                part,
                finding,
            } => {
                write!(
                    f,
                    "handler `{handler}` ({location}): in its {part} (at `{}`): {}",
                    finding.at,
                    finding.change.what()
                )?;
                if *part == "error" && matches!(finding.change, Change::VariantAdded { .. }) {
                    write!(
                        f,
                        " (an old caller would get a codec error instead of this error)"
                    )?;
                }
                write!(
                    f,
                    ". {}; {}",
                    finding.change.fix(),
                    new_name_or_accept(handler, &finding.change)
                )
            }
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

pub(crate) fn lock_err(message: String) -> Error {
    Error {
        problems: vec![Problem::Lock { message }],
    }
}
