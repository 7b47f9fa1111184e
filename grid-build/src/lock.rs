//! The lock file: one line per handler, columns separated by ` | `, sorted by wire name.
//!
//! ```text
//! # wire name | id | shape | request | input item | output item | response
//! Locker.lock | 0x1b2c3d4e | unary | LockArgs | - | - | Result<bool, LockError>
//! Locker.old  | 0x0badf00d | retired | - | - | - | -
//! ```
//!
//! `-` marks an empty column. A `retired` line keeps a removed handler's id and wire name
//! reserved forever. Lines starting with `#` are comments.

use crate::scan::{Handler, Shape};

/// One line of the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The wire name.
    pub wire_name: String,
    /// The id.
    pub id: u32,
    /// `None` for a retired handler.
    pub shape: Option<Shape>,
    /// Request type as written.
    pub request: String,
    /// Input item type.
    pub input: Option<String>,
    /// Output item type.
    pub output: Option<String>,
    /// Response type as written.
    pub response: String,
}

impl Entry {
    pub(crate) fn from_handler(h: &Handler) -> Entry {
        Entry {
            wire_name: h.wire_name.clone(),
            id: h.id,
            shape: Some(h.shape),
            request: h.request.clone(),
            input: h.input.clone(),
            output: h.output.clone(),
            response: h.response.clone(),
        }
    }

    pub(crate) fn retired(&self) -> Entry {
        Entry {
            shape: None,
            request: String::new(),
            input: None,
            output: None,
            response: String::new(),
            ..self.clone()
        }
    }

    /// True for a retired handler.
    pub fn is_retired(&self) -> bool {
        self.shape.is_none()
    }
}

const HEADER: &str = "\
# grid handler lock file, written by grid-build. Commit it.
# It records every handler's wire name, id and signature so that a change that would break
# rolling upgrades fails the build. To accept a deliberate change: GRID_UPDATE_LOCK=1 cargo build
# Columns: wire name | id | shape | request | input item | output item | response
";

fn col(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Renders entries (sorted by wire name) as the lock file's text.
pub fn render(entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.wire_name.cmp(&b.wire_name));
    let mut out = String::from(HEADER);
    for e in sorted {
        let shape = e.shape.map_or("retired", Shape::as_str);
        out.push_str(&format!(
            "{} | {:#010x} | {} | {} | {} | {} | {}\n",
            e.wire_name,
            e.id,
            shape,
            col(&e.request),
            col(e.input.as_deref().unwrap_or("")),
            col(e.output.as_deref().unwrap_or("")),
            col(&e.response),
        ));
    }
    out
}

/// Parses the lock file's text.
///
/// # Errors
/// A message naming the line that does not parse.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        let cols: Vec<&str> = line.split(" | ").map(str::trim).collect();
        let [name, id, shape, request, input, output, response] = cols[..] else {
            return Err(bad("expected 7 columns separated by ' | '"));
        };
        let id = id
            .strip_prefix("0x")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("the id must be hexadecimal like 0x1b2c3d4e"))?;
        let shape = match shape {
            "retired" => None,
            s => Some(Shape::parse(s).ok_or_else(|| bad("unknown shape"))?),
        };
        let opt = |s: &str| (s != "-").then(|| s.to_owned());
        out.push(Entry {
            wire_name: name.to_owned(),
            id,
            shape,
            request: opt(request).unwrap_or_default(),
            input: opt(input),
            output: opt(output),
            response: opt(response).unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_parse_is_identity() {
        let entries = vec![
            Entry {
                wire_name: "B.b".into(),
                id: 7,
                shape: Some(Shape::TwoWay),
                request: "(u8, Vec<String>)".into(),
                input: Some("Ping".into()),
                output: Some("Pong".into()),
                response: "Result<(), E>".into(),
            },
            Entry {
                wire_name: "A.a".into(),
                id: 0xdead_beef,
                shape: None,
                request: String::new(),
                input: None,
                output: None,
                response: String::new(),
            },
        ];
        let text = render(&entries);
        assert!(
            text.contains("A.a | 0xdeadbeef | retired | - | - | - | -\n"),
            "{text}"
        );
        let mut back = parse(&text).expect("parses");
        back.sort_by(|a, b| b.wire_name.cmp(&a.wire_name));
        assert_eq!(back, entries);
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse("A.a | 12 | unary | - | - | - | -").expect_err("decimal id");
        assert!(
            err.contains("line 1") && err.contains("hexadecimal"),
            "{err}"
        );
        assert!(parse("A.a | 0x1 | sideways | - | - | - | -").is_err());
        assert!(parse("A.a | 0x1").is_err());
    }
}
