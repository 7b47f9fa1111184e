//! Whether the old build (as locked) and the new build (the sources) can decode each other's
//! values, by msgpack-map rules.
//!
//! During a rolling upgrade every payload crosses in both directions: old nodes call new ones
//! and new nodes call old ones, so each build writes requests, items, responses and errors that
//! the other build reads. A change is compatible only when the new build reads what the old one
//! writes *and* the old build reads what the new one writes. For a struct (a map keyed by field
//! names) that means:
//!
//! - a field the reader reads must be written by the other side under one of the names it
//!   reads, or have a default on the reader's side (`#[serde(default)]`, an `Option`);
//! - a field the reader does not know is ignored, unless it has `deny_unknown_fields`;
//! - fields matched this way must have compatible types, recursively.
//!
//! For an enum, every variant the writer can send must be one the reader knows (or caught by
//! its `#[serde(other)]`), so a new variant breaks old readers and a removed one breaks new
//! readers. Types the scanner could not see into ([`Ty::Opaque`]) are compared as written.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use crate::schema::{Content, Def, Enum, Repr, Struct, Ty, Types, Write};

/// One of the two builds of a rolling upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The build recorded in the lock.
    Old,
    /// The build in the sources.
    New,
}

impl Build {
    fn other(self) -> Build {
        match self {
            Build::Old => Build::New,
            Build::New => Build::Old,
        }
    }
}

impl fmt::Display for Build {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Build::Old => "old",
            Build::New => "new",
        })
    }
}

/// What changed incompatibly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A value's wire type changed.
    TypeChanged {
        /// As locked.
        old: String,
        /// As now.
        new: String,
    },
    /// A tuple (or a handler's list of request arguments) changed its length.
    TupleLength {
        /// As locked.
        old: usize,
        /// As now.
        new: usize,
    },
    /// A type grid-build cannot see into changed as written.
    Opaque {
        /// As locked.
        old: String,
        /// As now.
        new: String,
    },
    /// A new field without a default.
    FieldAdded {
        /// Its name on the wire.
        field: String,
    },
    /// A field the old build requires is gone.
    FieldRemoved {
        /// Its name on the wire.
        field: String,
    },
    /// A field was renamed on the wire.
    FieldRenamed {
        /// The old name.
        old: String,
        /// The new name.
        new: String,
        /// True when the new field has the old name as an alias (which helps only one way).
        alias: bool,
    },
    /// One build may leave a field out (`skip_serializing_if`) that the other requires.
    FieldMaybeAbsent {
        /// Its name on the wire.
        field: String,
        /// The build that may leave it out.
        writer: Build,
    },
    /// A build with `deny_unknown_fields` would receive a field it does not know.
    UnknownFieldRejected {
        /// The field.
        field: String,
        /// The build that rejects it.
        reader: Build,
    },
    /// A new enum variant that the old build cannot decode.
    VariantAdded {
        /// Its name on the wire.
        variant: String,
    },
    /// An enum variant the old build may still send is gone.
    VariantRemoved {
        /// Its name on the wire.
        variant: String,
    },
    /// An enum variant was renamed on the wire.
    VariantRenamed {
        /// The old name.
        old: String,
        /// The new name.
        new: String,
    },
    /// An enum's representation (`tag`, `content`, `untagged`) changed.
    ReprChanged {
        /// As locked.
        old: String,
        /// As now.
        new: String,
    },
    /// The variants of an untagged enum changed.
    UntaggedChanged,
}

impl Change {
    /// What happened and why it breaks, as a sentence fragment.
    pub fn what(&self) -> String {
        match self {
            Change::TypeChanged { old, new } => format!(
                "changed from `{old}` to `{new}`, so the two builds cannot decode each other's values"
            ),
            Change::TupleLength { old, new } => format!(
                "a tuple of {old} values became a tuple of {new}, so the two builds cannot decode each other's values"
            ),
            Change::Opaque { old, new } => format!(
                "changed from `{old}` to `{new}` as written. grid-build cannot see the structure of \
                 a type defined outside the scanned sources or with a hand-written serde impl, so \
                 it compares such types by name"
            ),
            Change::FieldAdded { field } => format!(
                "new field `{field}` has no default, so the new build cannot decode values from \
                 the old build, which lack it"
            ),
            Change::FieldRemoved { field } => format!(
                "field `{field}` is gone, but the old build requires it"
            ),
            Change::FieldRenamed { old, new, alias } => {
                let mut s = format!(
                    "field `{old}` was renamed to `{new}`, and field names are on the wire"
                );
                if *alias {
                    s.push_str(&format!(
                        "; the alias lets the new build read `{old}`, but the old build still requires `{old}`"
                    ));
                }
                s
            }
            Change::FieldMaybeAbsent { field, writer } => format!(
                "field `{field}` may be left out by the {writer} build \
                 (#[serde(skip_serializing_if)]), but the {} build requires it",
                writer.other()
            ),
            Change::UnknownFieldRejected { field, reader: Build::Old } => format!(
                "the old build rejects unknown fields (#[serde(deny_unknown_fields)]) and field \
                 `{field}` is new to it"
            ),
            Change::UnknownFieldRejected { field, reader: Build::New } => format!(
                "the new build rejects unknown fields (#[serde(deny_unknown_fields)]), but the \
                 old build still writes field `{field}`"
            ),
            Change::VariantAdded { variant } => format!(
                "new variant `{variant}`: the old build cannot decode a value that holds it"
            ),
            Change::VariantRemoved { variant } => format!(
                "variant `{variant}` is gone, but the old build may still send it and the new \
                 build cannot decode it"
            ),
            Change::VariantRenamed { old, new } => format!(
                "variant `{old}` was renamed to `{new}`, and variant names are on the wire"
            ),
            Change::ReprChanged { old, new } => {
                format!("the enum's representation changed from {old} to {new}")
            }
            Change::UntaggedChanged => "the variants of an untagged enum changed; its reader tries \
                 them in order, so grid-build accepts an untagged enum only unchanged"
                .to_owned(),
        }
    }

    /// When accepting the change with `GRID_UPDATE_LOCK=1` is safe.
    pub fn safe_to_accept(&self) -> &'static str {
        match self {
            Change::Opaque { .. } => {
                "if its wire format did not change, or if no running node still has the old build"
            }
            _ => "if no running node still has the old build",
        }
    }

    /// What to do about it (besides a new wire name or accepting the change).
    pub fn fix(&self) -> String {
        match self {
            Change::TypeChanged { .. } => {
                "Keep the old type, and carry the new one in a new field with #[serde(default)]"
                    .into()
            }
            Change::TupleLength { .. } => "Keep the values as they are, and carry new data in a \
                 struct field with #[serde(default)]"
                .into(),
            Change::Opaque { .. } => "Keep the old type".into(),
            Change::FieldAdded { field } => {
                format!("Give `{field}` #[serde(default)] (or make it an Option)")
            }
            Change::FieldRemoved { .. } => {
                "Keep the field (the new code may ignore it) until no node runs the old build".into()
            }
            Change::FieldRenamed { old, new, .. } => format!(
                "Keep the wire name: put #[serde(rename = \"{old}\")] on the field now written as `{new}`"
            ),
            Change::FieldMaybeAbsent { field, writer: Build::New } => format!(
                "Always write `{field}` (drop its skip_serializing_if) while old nodes run"
            ),
            Change::FieldMaybeAbsent { field, writer: Build::Old } => {
                format!("Give `{field}` #[serde(default)] in the new build")
            }
            Change::UnknownFieldRejected { reader: Build::Old, .. } => {
                "Leave the type as it is while old nodes run".into()
            }
            Change::UnknownFieldRejected { field, reader: Build::New } => format!(
                "Drop deny_unknown_fields, or keep reading `{field}` while old nodes run"
            ),
            Change::VariantAdded { .. } | Change::ReprChanged { .. } | Change::UntaggedChanged => {
                "Leave the enum as it is while old nodes run".into()
            }
            Change::VariantRemoved { .. } => {
                "Keep the variant (the new code need not produce it) until no node runs the old build"
                    .into()
            }
            Change::VariantRenamed { old, new } => format!(
                "Keep the wire name: put #[serde(rename = \"{old}\")] on the variant now written as `{new}`"
            ),
        }
    }
}

/// One incompatibility, and where in the type it is (`LockArgs.size`, `LockError::Timeout`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The path from the handler's payload type to the change.
    pub at: String,
    /// What changed.
    pub change: Change,
}

/// Every incompatibility between `old` (resolved in `old_types`) and `new` (in `new_types`);
/// empty when the two builds can decode each other's values.
pub(crate) fn compare(old: &Ty, old_types: &Types, new: &Ty, new_types: &Types) -> Vec<Finding> {
    let mut cmp = Cmp::new(old_types, new_types);
    let at = shown(old);
    cmp.ty(old, new, &at);
    cmp.out
}

/// A type after following names and aliases.
enum View<'a> {
    Ty(&'a Ty),
    Struct(&'a Struct, &'a str),
    Enum(&'a Enum, &'a str),
}

/// Follows `Named` keys and aliases. A key missing from the table (a hand-edited lock) or an
/// alias cycle is seen as the opaque key.
fn view<'a>(mut t: &'a Ty, types: &'a Types) -> Result<View<'a>, &'a str> {
    for _ in 0..64 {
        match t {
            Ty::Named(k) => match types.get(k) {
                Some(Def::Alias(inner)) => t = inner,
                Some(Def::Struct(s)) => return Ok(View::Struct(s, k)),
                Some(Def::Enum(e)) => return Ok(View::Enum(e, k)),
                None => return Err(k),
            },
            other => return Ok(View::Ty(other)),
        }
    }
    Err("a cycle of type aliases")
}

struct Cmp<'a> {
    old: &'a Types,
    new: &'a Types,
    /// (old key, new key) pairs being or already compared: recursive types end here.
    seen: HashSet<(String, String)>,
    out: Vec<Finding>,
}

impl<'a> Cmp<'a> {
    fn new(old: &'a Types, new: &'a Types) -> Cmp<'a> {
        Cmp {
            old,
            new,
            seen: HashSet::new(),
            out: Vec::new(),
        }
    }

    fn push(&mut self, at: &str, change: Change) {
        let f = Finding {
            at: at.to_owned(),
            change,
        };
        if !self.out.contains(&f) {
            self.out.push(f);
        }
    }

    /// True when `old` and `new` are compatible (used to spot renames).
    fn equivalent(&self, old: &Ty, new: &Ty) -> bool {
        let mut c = Cmp::new(self.old, self.new);
        c.ty(old, new, "");
        c.out.is_empty()
    }

    fn ty(&mut self, o: &Ty, n: &Ty, at: &str) {
        let (ov, nv) = match (view(o, self.old), view(n, self.new)) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                let text = |r: Result<View<'_>, &str>, t: &Ty| match r {
                    Err(k) => k.to_owned(),
                    Ok(_) => shown(t),
                };
                let (ot, nt) = (text(a, o), text(b, n));
                if ot != nt {
                    self.push(at, Change::Opaque { old: ot, new: nt });
                }
                return;
            }
        };
        match (ov, nv) {
            (View::Struct(os, ok), View::Struct(ns, nk)) => {
                if self.seen.insert((ok.to_owned(), nk.to_owned())) {
                    self.structs(os, ns, at);
                }
            }
            (View::Enum(oe, ok), View::Enum(ne, nk)) => {
                if self.seen.insert((ok.to_owned(), nk.to_owned())) {
                    self.enums(oe, ne, at);
                }
            }
            (View::Ty(a), View::Ty(b)) => self.plain(a, b, o, n, at),
            (View::Ty(Ty::Opaque(_)), _) | (_, View::Ty(Ty::Opaque(_))) => self.push(
                at,
                Change::Opaque {
                    old: shown(o),
                    new: shown(n),
                },
            ),
            _ => self.push(
                at,
                Change::TypeChanged {
                    old: shown(o),
                    new: shown(n),
                },
            ),
        }
    }

    /// Two types that are neither structs nor enums; `o` and `n` are as written in the lock
    /// (for messages).
    fn plain(&mut self, a: &Ty, b: &Ty, o: &Ty, n: &Ty, at: &str) {
        match (a, b) {
            (Ty::Prim(x), Ty::Prim(y)) if x == y => {}
            (Ty::Option(x), Ty::Option(y)) => self.ty(x, y, at),
            (Ty::Seq(x), Ty::Seq(y)) => self.ty(x, y, &format!("{at}[]")),
            (Ty::Array(x, i), Ty::Array(y, j)) if i == j => self.ty(x, y, &format!("{at}[]")),
            (Ty::Map(k1, v1), Ty::Map(k2, v2)) => {
                self.ty(k1, k2, &format!("{at}{{key}}"));
                self.ty(v1, v2, &format!("{at}{{}}"));
            }
            (Ty::Tuple(xs), Ty::Tuple(ys)) if xs.len() == ys.len() => {
                for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
                    self.ty(x, y, &format!("{at}.{i}"));
                }
            }
            (Ty::Tuple(xs), Ty::Tuple(ys)) => self.push(
                at,
                Change::TupleLength {
                    old: xs.len(),
                    new: ys.len(),
                },
            ),
            (Ty::Result(t1, e1), Ty::Result(t2, e2)) => {
                self.ty(t1, t2, &format!("{at}::Ok"));
                self.ty(e1, e2, &format!("{at}::Err"));
            }
            (Ty::Opaque(x), Ty::Opaque(y)) if x == y => {}
            (Ty::Opaque(_), _) | (_, Ty::Opaque(_)) => self.push(
                at,
                Change::Opaque {
                    old: shown(o),
                    new: shown(n),
                },
            ),
            _ => self.push(
                at,
                Change::TypeChanged {
                    old: shown(o),
                    new: shown(n),
                },
            ),
        }
    }

    fn structs(&mut self, o: &Struct, n: &Struct, at: &str) {
        let mut pairs = BTreeSet::new();
        self.read_struct(Build::New, n, o, at, &mut pairs);
        self.read_struct(Build::Old, o, n, at, &mut pairs);
        for (oi, ni) in pairs {
            let (of, nf) = (&o.fields[oi], &n.fields[ni]);
            self.ty(&of.ty, &nf.ty, &format!("{at}.{}", nf.name));
        }
    }

    /// `reader` (of build `rb`) decoding a value written by the other build as `writer`.
    /// Matched fields go into `pairs` as (old index, new index).
    fn read_struct(
        &mut self,
        rb: Build,
        reader: &Struct,
        writer: &Struct,
        at: &str,
        pairs: &mut BTreeSet<(usize, usize)>,
    ) {
        let read_by_reader = |name: &str| {
            reader
                .fields
                .iter()
                .any(|r| r.reads.iter().any(|x| x == name))
        };
        for (ri, r) in reader.fields.iter().enumerate() {
            if r.reads.is_empty() {
                continue;
            }
            let matched = writer
                .fields
                .iter()
                .position(|w| w.write != Write::Never && r.reads.contains(&w.name));
            if let Some(wi) = matched {
                pairs.insert(if rb == Build::New { (wi, ri) } else { (ri, wi) });
                if writer.fields[wi].write == Write::Maybe && !r.default {
                    self.push(
                        at,
                        Change::FieldMaybeAbsent {
                            field: r.name.clone(),
                            writer: rb.other(),
                        },
                    );
                }
                continue;
            }
            if r.default {
                continue;
            }
            let renamed = writer.fields.iter().find(|w| {
                w.write != Write::Never
                    && !read_by_reader(&w.name)
                    && match rb {
                        Build::New => self.equivalent(&w.ty, &r.ty),
                        Build::Old => self.equivalent(&r.ty, &w.ty),
                    }
            });
            let change = match (rb, renamed) {
                (Build::New, Some(w)) => Change::FieldRenamed {
                    old: w.name.clone(),
                    new: r.name.clone(),
                    alias: false,
                },
                (Build::Old, Some(w)) => Change::FieldRenamed {
                    old: r.name.clone(),
                    new: w.name.clone(),
                    alias: w.reads.contains(&r.name),
                },
                (Build::New, None) => Change::FieldAdded {
                    field: r.name.clone(),
                },
                (Build::Old, None) => Change::FieldRemoved {
                    field: r.name.clone(),
                },
            };
            self.push(at, change);
        }
        if reader.deny_unknown {
            for w in &writer.fields {
                if w.write != Write::Never && !read_by_reader(&w.name) {
                    self.push(
                        at,
                        Change::UnknownFieldRejected {
                            field: w.name.clone(),
                            reader: rb,
                        },
                    );
                }
            }
        }
    }

    fn enums(&mut self, o: &Enum, n: &Enum, at: &str) {
        if o.repr != n.repr {
            self.push(
                at,
                Change::ReprChanged {
                    old: repr_text(&o.repr),
                    new: repr_text(&n.repr),
                },
            );
            return;
        }
        if o.repr == Repr::Untagged {
            let same = o.variants.len() == n.variants.len()
                && o.variants
                    .iter()
                    .zip(&n.variants)
                    .all(|(a, b)| self.content_equivalent(&a.content, &b.content));
            if !same {
                self.push(at, Change::UntaggedChanged);
            }
            return;
        }
        let mut pairs = BTreeSet::new();
        self.read_enum(Build::New, n, o, at, &mut pairs);
        self.read_enum(Build::Old, o, n, at, &mut pairs);
        for (oi, ni) in pairs {
            let (ov, nv) = (&o.variants[oi], &n.variants[ni]);
            self.content(&ov.content, &nv.content, &format!("{at}::{}", nv.name));
        }
    }

    fn read_enum(
        &mut self,
        rb: Build,
        reader: &Enum,
        writer: &Enum,
        at: &str,
        pairs: &mut BTreeSet<(usize, usize)>,
    ) {
        let catch_all = reader.variants.iter().any(|r| r.other);
        let tag_first = matches!(reader.repr, Repr::Internal(_) | Repr::Adjacent(..));
        for (wi, w) in writer.variants.iter().enumerate() {
            if !w.written {
                continue;
            }
            if let Some(ri) = reader
                .variants
                .iter()
                .position(|r| r.reads.contains(&w.name))
            {
                pairs.insert(if rb == Build::New { (wi, ri) } else { (ri, wi) });
                continue;
            }
            // `#[serde(other)]` catches an unknown tag; with external tagging only when the
            // unknown variant is a bare name (a unit variant).
            if catch_all && (tag_first || w.content == Content::Unit) {
                continue;
            }
            let renamed = reader.variants.iter().find(|r| {
                !r.other
                    && !writer
                        .variants
                        .iter()
                        .any(|w2| w2.written && r.reads.contains(&w2.name))
                    && match rb {
                        Build::New => self.content_equivalent(&w.content, &r.content),
                        Build::Old => self.content_equivalent(&r.content, &w.content),
                    }
            });
            let change = match (rb, renamed) {
                (Build::Old, Some(r)) => Change::VariantRenamed {
                    old: r.name.clone(),
                    new: w.name.clone(),
                },
                (Build::New, Some(r)) => Change::VariantRenamed {
                    old: w.name.clone(),
                    new: r.name.clone(),
                },
                (Build::Old, None) => Change::VariantAdded {
                    variant: w.name.clone(),
                },
                (Build::New, None) => Change::VariantRemoved {
                    variant: w.name.clone(),
                },
            };
            self.push(at, change);
        }
    }

    fn content_equivalent(&self, o: &Content, n: &Content) -> bool {
        let mut c = Cmp::new(self.old, self.new);
        c.content(o, n, "");
        c.out.is_empty()
    }

    fn content(&mut self, o: &Content, n: &Content, at: &str) {
        match (o, n) {
            (Content::Unit, Content::Unit) => {}
            (Content::Newtype(a), Content::Newtype(b)) => self.ty(a, b, at),
            (Content::Struct(a), Content::Struct(b)) => self.structs(a, b, at),
            _ => self.push(
                at,
                Change::TypeChanged {
                    old: content_text(o),
                    new: content_text(n),
                },
            ),
        }
    }
}

/// A type for a message: the lock's text without its backquotes.
fn shown(t: &Ty) -> String {
    t.to_string().replace('`', "")
}

fn repr_text(r: &Repr) -> String {
    match r {
        Repr::External => "external tagging (the default)".into(),
        Repr::Internal(t) => format!("#[serde(tag = \"{t}\")]"),
        Repr::Adjacent(t, c) => format!("#[serde(tag = \"{t}\", content = \"{c}\")]"),
        Repr::Untagged => "#[serde(untagged)]".into(),
    }
}

fn content_text(c: &Content) -> String {
    match c {
        Content::Unit => "no content".into(),
        Content::Newtype(t) => format!("({})", shown(t)),
        Content::Struct(s) => {
            let names: Vec<&str> = s.fields.iter().map(|f| f.name.as_str()).collect();
            format!("{{ {} }}", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{parse_defs, parse_ty};

    fn check(old: &str, new: &str, old_ty: &str, new_ty: &str) -> Vec<Finding> {
        let (ot, nt) = (parse_defs(old).expect("old"), parse_defs(new).expect("new"));
        compare(
            &parse_ty(old_ty).expect("old ty"),
            &ot,
            &parse_ty(new_ty).expect("new ty"),
            &nt,
        )
    }

    #[test]
    fn same_structure_under_other_names_is_compatible() {
        let old = "type A = struct { x: u8, next: option<A> [default] }";
        let new = "type B = struct { x: u8, next: option<B> [default] }\ntype Id = u8";
        assert!(check(old, new, "A", "B").is_empty());
        assert!(check("", new, "u8", "Id").is_empty());
    }

    #[test]
    fn recursive_types_terminate_and_find_deep_changes() {
        let old = "type A = struct { x: u8, kids: seq<A> }";
        let new = "type A = struct { x: u16, kids: seq<A> }";
        let f = check(old, new, "A", "A");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].at, "A.x");
    }

    #[test]
    fn an_external_catch_all_takes_only_unit_variants() {
        let old = "type E = enum { A, Unknown [other] }";
        let unit = "type E = enum { A, B, Unknown [other] }";
        let data = "type E = enum { A, B(u8), Unknown [other] }";
        assert!(check(old, unit, "E", "E").is_empty());
        let f = check(old, data, "E", "E");
        assert_eq!(
            f[0].change,
            Change::VariantAdded {
                variant: "B".into()
            }
        );
    }
}
