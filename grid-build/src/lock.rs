//! The lock file: one line per handler, columns separated by ` | `, sorted by wire name; then the
//! structure of every named type those lines refer to, in the text form of [`crate::schema`].
//!
//! ```text
//! # wire name | id | shape | request | input item | output item | response | error
//! Locker.lock | 0xb5937eee | unary | LockArgs | - | - | bool | LockError
//! Locker.old | 0x0badf00d | retired | - | - | - | - | -
//!
//! type LockArgs = struct {
//!     resource: str,
//!     ttl_ms: option<u64> [default],
//! }
//! type LockError = enum {
//!     Busy,
//! }
//! ```
//!
//! `-` marks an empty column. A `retired` line keeps a removed handler's id and wire name
//! reserved forever. Lines starting with `#` are comments. A line of seven columns is from a lock
//! written before structure was recorded: its types are as written, and are compared as written
//! once, then the lock is rewritten in this form.

use crate::scan::{Handler, Signature, Written};
use crate::schema::{self, Types};
use grid_wire::Shape;

/// What the lock says about one handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// Removed on purpose: its id and wire name stay reserved.
    Retired,
    /// The wire structure of its payloads.
    Signature(Signature),
    /// Its shape and types as written, from a lock that predates structural records.
    Written(Shape, Written),
}

/// One handler line of the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The wire name.
    pub wire_name: String,
    /// The id.
    pub id: u32,
    /// What is recorded.
    pub locked: Locked,
}

impl Entry {
    pub(crate) fn from_handler(h: &Handler) -> Entry {
        Entry {
            wire_name: h.wire_name.clone(),
            id: h.id,
            locked: Locked::Signature(h.signature.clone()),
        }
    }

    pub(crate) fn retired(&self) -> Entry {
        Entry {
            locked: Locked::Retired,
            ..self.clone()
        }
    }

    /// True for a retired handler.
    pub fn is_retired(&self) -> bool {
        self.locked == Locked::Retired
    }
}

/// A whole lock file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lock {
    /// The handler lines.
    pub entries: Vec<Entry>,
    /// The named types the lines refer to.
    pub types: Types,
}

const HEADER: &str = "\
# grid handler lock file, written by grid-build. Commit it.
# It records every handler's wire name, id and the wire structure of its payloads, so that a
# change that would break a rolling upgrade fails the build. To accept a deliberate change:
# GRID_UPDATE_LOCK=1 cargo build
# Columns: wire name | id | shape | request | input item | output item | response | error
";

const TYPES_HEADER: &str = "
# The named types above, as msgpack carries them: a struct is a map of its fields ([default]:
# may be missing), an enum lists its variants; `str` is any string type; a `quoted` type is
# one grid-build could not see into and compares as written.
";

fn col(s: Option<String>) -> String {
    s.unwrap_or_else(|| "-".to_owned())
}

/// Renders a lock (entries sorted by wire name) as the lock file's text.
pub fn render(lock: &Lock) -> String {
    let mut sorted: Vec<&Entry> = lock.entries.iter().collect();
    sorted.sort_by(|a, b| a.wire_name.cmp(&b.wire_name));
    let mut out = String::from(HEADER);
    for e in sorted {
        let cols: [String; 6] = match &e.locked {
            Locked::Retired => ["retired", "-", "-", "-", "-", "-"].map(str::to_owned),
            Locked::Signature(s) => [
                s.shape.as_str().to_owned(),
                s.request.to_string(),
                col(s.input.as_ref().map(ToString::to_string)),
                col(s.output.as_ref().map(ToString::to_string)),
                s.response.to_string(),
                s.error.to_string(),
            ],
            // Never written: a run rewrites old entries with their structure.
            Locked::Written(shape, w) => [
                shape.as_str().to_owned(),
                w.request.clone(),
                col(w.input.clone()),
                col(w.output.clone()),
                w.response.clone(),
                "-".to_owned(),
            ],
        };
        out.push_str(&format!(
            "{} | {:#010x} | {}\n",
            e.wire_name,
            e.id,
            cols.join(" | ")
        ));
    }
    if !lock.types.is_empty() {
        out.push_str(TYPES_HEADER);
        for (k, d) in &lock.types {
            out.push_str(&schema::render_def(k, d));
        }
    }
    out
}

/// Parses the lock file's text.
///
/// # Errors
/// A message naming the line that does not parse.
pub fn parse(text: &str) -> Result<Lock, String> {
    let mut entries = Vec::new();
    let mut types_from = None;
    let mut offset = 0;
    for (n, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim();
        let start = offset;
        offset += raw.len();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("type ") {
            types_from = Some((n, start));
            break;
        }
        entries.push(parse_line(line).map_err(|why| format!("line {}: {why}: {line:?}", n + 1))?);
    }
    let types = match types_from {
        Some((n, start)) => schema::parse_defs(&text[start..])
            .map_err(|why| format!("in the types from line {}: {why}", n + 1))?,
        None => Types::new(),
    };
    Ok(Lock { entries, types })
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let cols: Vec<&str> = line.split(" | ").map(str::trim).collect();
    let (name, id, shape, rest) = match cols[..] {
        [name, id, shape, ref rest @ ..] if rest.len() == 4 || rest.len() == 5 => {
            (name, id, shape, rest)
        }
        _ => return Err("expected 8 columns separated by ' | '".into()),
    };
    let id = id
        .strip_prefix("0x")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("the id must be hexadecimal like 0x1b2c3d4e")?;
    let opt = |s: &str| (s != "-").then(|| s.to_owned());
    let locked = match (shape, rest) {
        ("retired", _) => Locked::Retired,
        (s, [request, input, output, response]) => {
            let shape = Shape::parse(s).ok_or("unknown shape")?;
            Locked::Written(
                shape,
                Written {
                    request: (*request).to_owned(),
                    input: opt(input),
                    output: opt(output),
                    response: (*response).to_owned(),
                },
            )
        }
        (s, [request, input, output, response, error]) => {
            let shape = Shape::parse(s).ok_or("unknown shape")?;
            let ty = |c: &str| schema::parse_ty(c);
            let item = |c: &str| (c != "-").then(|| schema::parse_ty(c)).transpose();
            Locked::Signature(Signature {
                shape,
                request: ty(request)?,
                input: item(input)?,
                output: item(output)?,
                response: ty(response)?,
                error: ty(error)?,
            })
        }
        _ => return Err("expected 8 columns separated by ' | '".into()),
    };
    Ok(Entry {
        wire_name: name.to_owned(),
        id,
        locked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{parse_defs, parse_ty};

    #[test]
    fn render_then_parse_is_identity() {
        let types = parse_defs(
            "type Ping = struct { seq: u64, note: option<str> [default] }\n\
             type E = enum { Busy, Other(`uuid::Uuid`) }",
        )
        .expect("types");
        let lock = Lock {
            entries: vec![
                Entry {
                    wire_name: "B.b".into(),
                    id: 7,
                    locked: Locked::Signature(Signature {
                        shape: Shape::TwoWay,
                        request: parse_ty("(u8, seq<str>)").expect("ty"),
                        input: Some(parse_ty("Ping").expect("ty")),
                        output: Some(parse_ty("bool").expect("ty")),
                        response: parse_ty("()").expect("ty"),
                        error: parse_ty("E").expect("ty"),
                    }),
                },
                Entry {
                    wire_name: "A.a".into(),
                    id: 0xdead_beef,
                    locked: Locked::Retired,
                },
            ],
            types,
        };
        let text = render(&lock);
        assert!(
            text.contains("A.a | 0xdeadbeef | retired | - | - | - | - | -\n"),
            "{text}"
        );
        assert!(
            text.contains("B.b | 0x00000007 | two-way | (u8, seq<str>) | Ping | bool | () | E\n"),
            "{text}"
        );
        let mut back = parse(&text).expect("parses");
        back.entries.sort_by(|a, b| b.wire_name.cmp(&a.wire_name));
        assert_eq!(back, lock);
    }

    #[test]
    fn a_lock_from_before_structure_is_read_as_written() {
        let lock = parse("A.a | 0x00000001 | unary | LockArgs | - | - | Result<bool, LockError>")
            .expect("old format parses");
        assert!(matches!(
            &lock.entries[0].locked,
            Locked::Written(Shape::Unary, w) if w.response == "Result<bool, LockError>"
        ));
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse("A.a | 12 | unary | - | - | - | - | -").expect_err("decimal id");
        assert!(
            err.contains("line 1") && err.contains("hexadecimal"),
            "{err}"
        );
        assert!(parse("A.a | 0x1 | sideways | () | - | - | () | ()").is_err());
        assert!(parse("A.a | 0x1").is_err());
        let err = parse("A.a | 0x1 | unary | () | - | - | () | ()\ntype X = struct {")
            .expect_err("open struct");
        assert!(err.contains("line 2"), "{err}");
    }
}
