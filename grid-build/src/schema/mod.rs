//! The serde structure of payload types, as msgpack carries it, and its text form in the lock.
//!
//! A [`Ty`] says what one value looks like on the wire, not how it is spelled in Rust: `String`,
//! `std::string::String` and `PathBuf` are all [`Prim::Str`]; a newtype struct is its inner value
//! (rmp-serde writes it transparently); a struct is a map keyed by field names (grid encodes with
//! `rmp_serde::to_vec_named`). Named structs and enums live once in a [`Types`] table and are
//! referred to by key, so recursive types have a finite description; a struct's own name never
//! reaches the wire, so two keys with the same structure are the same wire type.
//!
//! The text form, one grammar for the handler columns and the `type` lines of the lock:
//!
//! ```text
//! ty     := prim | "option<" ty ">" | "seq<" ty ">" | "map<" ty "," ty ">"
//!         | "result<" ty "," ty ">" | "[" ty ";" N "]" | "(" ty "," ... ")" | key | "`" text "`"
//! prim   := "()" | "unit_struct" | "bool" | "char" | "str" | "bytes" | "f32" | "f64" | u8 ... i128
//! key    := ident ("::" ident)* ("<" ty ("," ty)* ">")?
//! def    := "type" key "=" (struct | enum | ty)
//! struct := "struct" "deny_unknown"? "{" (field ",")* "}"
//! field  := name ":" ty flags?          flags := "[" flag ("," flag)* "]"
//! flag   := "default" | "maybe_absent" | "no_write" | "reads" (string* | "none")
//! enum   := "enum" repr? "{" (variant ",")* "}"
//! repr   := "tag" "=" string ("," "content" "=" string)? | "untagged"
//! variant:= name (struct-body | "(" ty ("," ty)* ","? ")")? flags?    flag += "other"
//! ```
//!
//! A backquoted type is opaque: grid-build could not see its definition (another crate, a
//! hand-written serde impl, `#[serde(with)]`), so it is compared as written.

use std::collections::BTreeMap;

mod text;

pub use text::render_def;
pub(crate) use text::{parse_defs, parse_ty};

/// A type with a fixed wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prim {
    /// `()`: msgpack nil.
    Unit,
    /// A unit struct (`struct Marker;`) or `PhantomData`: an empty msgpack array.
    UnitStruct,
    /// `bool`.
    Bool,
    /// `char`: a one-character string.
    Char,
    /// `String`, `&str`, `PathBuf`, `Box<str>`, …: a msgpack str.
    Str,
    /// `bytes::Bytes`, `serde_bytes::ByteBuf`, …: a msgpack bin.
    Bytes,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64` (and `usize`, which serde writes as `u64`).
    U64,
    /// `u128`.
    U128,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64` (and `isize`).
    I64,
    /// `i128`.
    I128,
}

pub(crate) const PRIMS: [(Prim, &str); 18] = [
    (Prim::Unit, "()"),
    (Prim::UnitStruct, "unit_struct"),
    (Prim::Bool, "bool"),
    (Prim::Char, "char"),
    (Prim::Str, "str"),
    (Prim::Bytes, "bytes"),
    (Prim::F32, "f32"),
    (Prim::F64, "f64"),
    (Prim::U8, "u8"),
    (Prim::U16, "u16"),
    (Prim::U32, "u32"),
    (Prim::U64, "u64"),
    (Prim::U128, "u128"),
    (Prim::I8, "i8"),
    (Prim::I16, "i16"),
    (Prim::I32, "i32"),
    (Prim::I64, "i64"),
    (Prim::I128, "i128"),
];

/// Words of the grammar; a user type with one of these names is written with its module path.
pub(crate) const RESERVED: &[&str] = &[
    "option",
    "seq",
    "map",
    "result",
    "struct",
    "enum",
    "type",
    "unit_struct",
    "bool",
    "char",
    "str",
    "bytes",
    "f32",
    "f64",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "i8",
    "i16",
    "i32",
    "i64",
    "i128",
];

impl Prim {
    /// The lock's spelling.
    pub fn as_str(self) -> &'static str {
        PRIMS
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("?", |(_, s)| s)
    }

    pub(crate) fn parse(s: &str) -> Option<Prim> {
        PRIMS.iter().find(|(_, n)| *n == s).map(|(p, _)| *p)
    }
}

/// What one value looks like on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ty {
    /// A type with a fixed form.
    Prim(Prim),
    /// `Option<T>`: nil or the value.
    Option(Box<Ty>),
    /// `Vec<T>`, `HashSet<T>`, `[T]`, …: an array of any length.
    Seq(Box<Ty>),
    /// `[T; N]`: an array of exactly `N`.
    Array(Box<Ty>, usize),
    /// `HashMap<K, V>`, `BTreeMap<K, V>`: a map.
    Map(Box<Ty>, Box<Ty>),
    /// `(A, B)` or a tuple struct: an array of exactly these.
    Tuple(Vec<Ty>),
    /// `Result<T, E>`: serde's `{"Ok": T}` or `{"Err": E}`.
    Result(Box<Ty>, Box<Ty>),
    /// A struct or enum of the sources, described in the [`Types`] table under this key.
    Named(String),
    /// A type whose structure grid-build cannot see; compared as written (normalised).
    Opaque(String),
}

/// The structured definitions a set of [`Ty`]s refers to, by key.
pub type Types = BTreeMap<String, Def>;

/// A named type's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Def {
    /// A struct with named fields: a map.
    Struct(Struct),
    /// An enum.
    Enum(Enum),
    /// Anything else with a name: a newtype or `#[serde(transparent)]` struct (its inner value),
    /// a tuple struct (a tuple), a unit struct.
    Alias(Ty),
}

/// A struct's fields, as a map on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Struct {
    /// The fields that reach the wire in at least one direction, in declaration order.
    pub fields: Vec<Field>,
    /// `#[serde(deny_unknown_fields)]`: a value with a field this side does not read fails.
    pub deny_unknown: bool,
}

/// When a field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Always.
    Always,
    /// `#[serde(skip_serializing_if)]`: sometimes left out.
    Maybe,
    /// `#[serde(skip_serializing)]`: never.
    Never,
}

/// One struct field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The key it is written under (after `rename` and `rename_all`).
    pub name: String,
    /// The keys it is read from (its name and its aliases; empty with `skip_deserializing`).
    pub reads: Vec<String>,
    /// Its type.
    pub ty: Ty,
    /// True when a value without it still decodes: `#[serde(default)]` (on the field or the
    /// struct), an `Option`, `skip_deserializing`.
    pub default: bool,
    /// When it is written.
    pub write: Write,
}

/// How an enum is laid out (serde's four representations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    /// The default: a unit variant is its name, another variant `{name: content}`.
    External,
    /// `#[serde(tag = "…")]`.
    Internal(String),
    /// `#[serde(tag = "…", content = "…")]`.
    Adjacent(String, String),
    /// `#[serde(untagged)]`: the content alone; the reader tries variants in order.
    Untagged,
}

/// An enum's variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enum {
    /// The representation.
    pub repr: Repr,
    /// The variants that reach the wire, in declaration order.
    pub variants: Vec<Variant>,
}

/// What a variant carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Nothing.
    Unit,
    /// One value; a tuple variant `V(A, B)` carries the tuple `(A, B)`, which is the same on
    /// the wire.
    Newtype(Ty),
    /// Named fields.
    Struct(Struct),
}

/// One enum variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// The name it is written under.
    pub name: String,
    /// The names it is read from (empty with `skip_deserializing`).
    pub reads: Vec<String>,
    /// Its content.
    pub content: Content,
    /// `#[serde(other)]`: read for any unknown variant.
    pub other: bool,
    /// False with `skip_serializing`.
    pub written: bool,
}
