//! The text form of the structure model in the lock: rendering and parsing. The grammar is in
//! the parent module's doc; `parse(render(x)) == x` is tested below.

use std::fmt::{self, Write as _};

use super::{Content, Def, Enum, Field, Prim, Repr, Struct, Ty, Types, Variant, Write};

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Prim(p) => f.write_str(p.as_str()),
            Ty::Option(t) => write!(f, "option<{t}>"),
            Ty::Seq(t) => write!(f, "seq<{t}>"),
            Ty::Array(t, n) => write!(f, "[{t}; {n}]"),
            Ty::Map(k, v) => write!(f, "map<{k}, {v}>"),
            Ty::Result(t, e) => write!(f, "result<{t}, {e}>"),
            Ty::Tuple(ts) => {
                f.write_str("(")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                if ts.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Ty::Named(k) => f.write_str(k),
            Ty::Opaque(text) => write!(f, "`{text}`"),
        }
    }
}

fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A field or variant name: bare when it is an identifier, quoted otherwise.
fn name(s: &str) -> String {
    if is_plain_name(s) {
        s.to_owned()
    } else {
        quoted(s)
    }
}

fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn reads_flag(name: &str, reads: &[String]) -> Option<String> {
    if reads.len() == 1 && reads[0] == name {
        return None;
    }
    if reads.is_empty() {
        return Some("reads none".into());
    }
    let list: Vec<String> = reads.iter().map(|r| quoted(r)).collect();
    Some(format!("reads {}", list.join(" ")))
}

fn flags(list: Vec<String>) -> String {
    if list.is_empty() {
        String::new()
    } else {
        format!(" [{}]", list.join(", "))
    }
}

fn field_text(fl: &Field) -> String {
    let mut list = Vec::new();
    if fl.default {
        list.push("default".to_owned());
    }
    match fl.write {
        Write::Always => {}
        Write::Maybe => list.push("maybe_absent".into()),
        Write::Never => list.push("no_write".into()),
    }
    list.extend(reads_flag(&fl.name, &fl.reads));
    format!("{}: {}{}", name(&fl.name), fl.ty, flags(list))
}

fn struct_body(s: &Struct, indent: &str, out: &mut String) {
    if s.fields.is_empty() {
        out.push_str("{}");
        return;
    }
    out.push_str("{\n");
    for fl in &s.fields {
        let _ = writeln!(out, "{indent}    {},", field_text(fl));
    }
    let _ = write!(out, "{indent}}}");
}

/// Writes a struct variant's fields on one line: `{ a: u8, b: str [default] }`.
fn inline_struct(s: &Struct) -> String {
    if s.fields.is_empty() {
        return "{}".into();
    }
    let fields: Vec<String> = s.fields.iter().map(field_text).collect();
    format!("{{ {} }}", fields.join(", "))
}

/// The `type` line(s) of one definition.
pub fn render_def(key: &str, def: &Def) -> String {
    let mut out = format!("type {key} = ");
    match def {
        Def::Alias(t) => {
            let _ = write!(out, "{t}");
        }
        Def::Struct(s) => {
            out.push_str("struct ");
            if s.deny_unknown {
                out.push_str("deny_unknown ");
            }
            struct_body(s, "", &mut out);
        }
        Def::Enum(e) => {
            out.push_str("enum ");
            match &e.repr {
                Repr::External => {}
                Repr::Internal(t) => {
                    let _ = write!(out, "tag = {} ", quoted(t));
                }
                Repr::Adjacent(t, c) => {
                    let _ = write!(out, "tag = {}, content = {} ", quoted(t), quoted(c));
                }
                Repr::Untagged => out.push_str("untagged "),
            }
            if e.variants.is_empty() {
                out.push_str("{}");
            } else {
                out.push_str("{\n");
                for v in &e.variants {
                    let _ = writeln!(out, "    {},", variant_text(v));
                }
                out.push('}');
            }
        }
    }
    out.push('\n');
    out
}

fn variant_text(v: &Variant) -> String {
    let mut s = name(&v.name);
    match &v.content {
        Content::Unit => {}
        Content::Newtype(Ty::Tuple(ts)) if ts.len() != 1 => {
            let _ = write!(s, "{}", Ty::Tuple(ts.clone()));
        }
        Content::Newtype(t) => {
            let _ = write!(s, "({t})");
        }
        Content::Struct(st) => {
            s.push(' ');
            s.push_str(&inline_struct(st));
        }
    }
    let mut list = Vec::new();
    if v.other {
        list.push("other".to_owned());
    }
    if !v.written {
        list.push("no_write".into());
    }
    list.extend(reads_flag(&v.name, &v.reads));
    s.push_str(&flags(list));
    s
}

/// A token of the text form.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Opaque(String),
    Num(usize),
    Punct(&'static str),
}

const PUNCT: [&str; 12] = ["::", "()", "<", ">", "(", ")", "[", "]", "{", "}", ",", ":"];
const PUNCT_MORE: [&str; 2] = [";", "="];

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    'outer: while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '#' {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
            continue;
        }
        for p in PUNCT.iter().chain(PUNCT_MORE.iter()) {
            if let Some(r) = rest.strip_prefix(p) {
                out.push(Tok::Punct(p));
                rest = r;
                continue 'outer;
            }
        }
        if c == '`' {
            let body = &rest[1..];
            let end = body
                .find('`')
                .ok_or("an opaque type has no closing backquote")?;
            out.push(Tok::Opaque(body[..end].to_owned()));
            rest = &body[end + 1..];
        } else if c == '"' {
            let mut value = String::new();
            let mut chars = rest[1..].char_indices();
            let mut end = None;
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => match chars.next() {
                        Some((_, esc)) => value.push(esc),
                        None => break,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    other => value.push(other),
                }
            }
            let end = end.ok_or("a string has no closing quote")?;
            out.push(Tok::Str(value));
            rest = &rest[1 + end + 1..];
        } else if c.is_ascii_digit() {
            let end = rest
                .find(|ch: char| !ch.is_ascii_digit())
                .unwrap_or(rest.len());
            let n = rest[..end]
                .parse()
                .map_err(|_| format!("number too large: {}", &rest[..end]))?;
            out.push(Tok::Num(n));
            rest = &rest[end..];
        } else if c.is_alphabetic() || c == '_' {
            let end = rest
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            out.push(Tok::Word(rest[..end].to_owned()));
            rest = &rest[end..];
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}

/// A cursor over the tokens of one lock column or of the type section.
pub(crate) struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    pub(crate) fn new(s: &str) -> Result<Parser, String> {
        Ok(Parser {
            toks: tokenize(s)?,
            pos: 0,
        })
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.toks.len()
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(q)) if q == w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), String> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(format!("expected `{p}`, found {}", self.found()))
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end".into(),
            Some(Tok::Word(w)) => format!("`{w}`"),
            Some(Tok::Str(s)) => quoted(s),
            Some(Tok::Opaque(s)) => format!("`{s}`"),
            Some(Tok::Num(n)) => n.to_string(),
            Some(Tok::Punct(p)) => format!("`{p}`"),
        }
    }

    fn word(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => {
                self.pos -= 1;
                Err(format!("expected a name, found {}", self.found()))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            _ => {
                self.pos -= 1;
                Err(format!("expected a quoted string, found {}", self.found()))
            }
        }
    }

    /// A field or variant name: a word or a quoted string.
    fn name(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Str(_)) => self.string(),
            _ => self.word(),
        }
    }

    /// One type expression.
    pub(crate) fn ty(&mut self) -> Result<Ty, String> {
        if self.eat("()") {
            return Ok(Ty::Prim(Prim::Unit));
        }
        if self.eat("(") {
            let mut ts = Vec::new();
            let mut trailing = false;
            while !self.eat(")") {
                ts.push(self.ty()?);
                trailing = self.eat(",");
                if !trailing {
                    self.expect(")")?;
                    break;
                }
            }
            return Ok(if ts.len() == 1 && !trailing {
                ts.remove(0)
            } else {
                Ty::Tuple(ts)
            });
        }
        if self.eat("[") {
            let t = self.ty()?;
            self.expect(";")?;
            let n = match self.next() {
                Some(Tok::Num(n)) => n,
                _ => return Err("expected an array length".into()),
            };
            self.expect("]")?;
            return Ok(Ty::Array(Box::new(t), n));
        }
        if let Some(Tok::Opaque(text)) = self.peek().cloned() {
            self.pos += 1;
            return Ok(Ty::Opaque(text));
        }
        let w = self.word()?;
        let one = |p: &mut Parser| -> Result<Box<Ty>, String> {
            p.expect("<")?;
            let t = p.ty()?;
            p.expect(">")?;
            Ok(Box::new(t))
        };
        let two = |p: &mut Parser| -> Result<(Box<Ty>, Box<Ty>), String> {
            p.expect("<")?;
            let a = p.ty()?;
            p.expect(",")?;
            let b = p.ty()?;
            p.expect(">")?;
            Ok((Box::new(a), Box::new(b)))
        };
        match w.as_str() {
            "option" => return Ok(Ty::Option(one(self)?)),
            "seq" => return Ok(Ty::Seq(one(self)?)),
            "map" => {
                let (k, v) = two(self)?;
                return Ok(Ty::Map(k, v));
            }
            "result" => {
                let (t, e) = two(self)?;
                return Ok(Ty::Result(t, e));
            }
            _ => {}
        }
        if let Some(p) = Prim::parse(&w) {
            return Ok(Ty::Prim(p));
        }
        Ok(Ty::Named(self.key_rest(w)?))
    }

    /// The rest of a key after its first word, rendered canonically.
    fn key_rest(&mut self, first: String) -> Result<String, String> {
        let mut key = first;
        while self.eat("::") {
            key.push_str("::");
            key.push_str(&self.word()?);
        }
        if self.eat("<") {
            let mut args = Vec::new();
            loop {
                args.push(self.ty()?.to_string());
                if !self.eat(",") {
                    break;
                }
            }
            self.expect(">")?;
            let _ = write!(key, "<{}>", args.join(", "));
        }
        Ok(key)
    }

    fn flags(
        &mut self,
        mut each: impl FnMut(&mut Parser, &str) -> Result<(), String>,
    ) -> Result<(), String> {
        if !self.eat("[") {
            return Ok(());
        }
        loop {
            let w = self.word()?;
            each(self, &w)?;
            if !self.eat(",") {
                break;
            }
        }
        self.expect("]")
    }

    fn reads(&mut self) -> Result<Vec<String>, String> {
        if self.eat_word("none") {
            return Ok(Vec::new());
        }
        let mut out = vec![self.string()?];
        while let Some(Tok::Str(_)) = self.peek() {
            out.push(self.string()?);
        }
        Ok(out)
    }

    fn field(&mut self) -> Result<Field, String> {
        let name = self.name()?;
        self.expect(":")?;
        let ty = self.ty()?;
        let mut fl = Field {
            reads: vec![name.clone()],
            name,
            ty,
            default: false,
            write: Write::Always,
        };
        self.flags(|p, w| {
            match w {
                "default" => fl.default = true,
                "maybe_absent" => fl.write = Write::Maybe,
                "no_write" => fl.write = Write::Never,
                "reads" => fl.reads = p.reads()?,
                other => return Err(format!("unknown field flag `{other}`")),
            }
            Ok(())
        })?;
        Ok(fl)
    }

    fn struct_body(&mut self, deny_unknown: bool) -> Result<Struct, String> {
        self.expect("{")?;
        let mut fields = Vec::new();
        while !self.eat("}") {
            fields.push(self.field()?);
            if !self.eat(",") {
                self.expect("}")?;
                break;
            }
        }
        Ok(Struct {
            fields,
            deny_unknown,
        })
    }

    fn variant(&mut self) -> Result<Variant, String> {
        let name = self.name()?;
        let content = if matches!(self.peek(), Some(Tok::Punct("{"))) {
            Content::Struct(self.struct_body(false)?)
        } else if matches!(self.peek(), Some(Tok::Punct("(" | "()"))) {
            Content::Newtype(self.ty()?)
        } else {
            Content::Unit
        };
        let mut v = Variant {
            reads: vec![name.clone()],
            name,
            content,
            other: false,
            written: true,
        };
        self.flags(|p, w| {
            match w {
                "other" => v.other = true,
                "no_write" => v.written = false,
                "reads" => v.reads = p.reads()?,
                other => return Err(format!("unknown variant flag `{other}`")),
            }
            Ok(())
        })?;
        Ok(v)
    }

    /// One `type key = …` definition.
    pub(crate) fn def(&mut self) -> Result<(String, Def), String> {
        if !self.eat_word("type") {
            return Err(format!("expected `type`, found {}", self.found()));
        }
        let first = self.word()?;
        let key = self.key_rest(first)?;
        self.expect("=")?;
        let def = if self.eat_word("struct") {
            let deny = self.eat_word("deny_unknown");
            Def::Struct(self.struct_body(deny)?)
        } else if self.eat_word("enum") {
            let repr = if self.eat_word("untagged") {
                Repr::Untagged
            } else if self.eat_word("tag") {
                self.expect("=")?;
                let tag = self.string()?;
                if self.eat(",") {
                    if !self.eat_word("content") {
                        return Err("expected `content`".into());
                    }
                    self.expect("=")?;
                    Repr::Adjacent(tag, self.string()?)
                } else {
                    Repr::Internal(tag)
                }
            } else {
                Repr::External
            };
            self.expect("{")?;
            let mut variants = Vec::new();
            while !self.eat("}") {
                variants.push(self.variant()?);
                if !self.eat(",") {
                    self.expect("}")?;
                    break;
                }
            }
            Def::Enum(Enum { repr, variants })
        } else {
            Def::Alias(self.ty()?)
        };
        Ok((key, def))
    }
}

/// Parses one type expression that must fill `s`.
pub(crate) fn parse_ty(s: &str) -> Result<Ty, String> {
    let mut p = Parser::new(s)?;
    let t = p.ty()?;
    if !p.at_end() {
        return Err(format!("unexpected {} after the type", p.found()));
    }
    Ok(t)
}

/// Parses a sequence of `type` definitions.
pub(crate) fn parse_defs(s: &str) -> Result<Types, String> {
    let mut p = Parser::new(s)?;
    let mut out = Types::new();
    while !p.at_end() {
        let (key, def) = p.def()?;
        if out.insert(key.clone(), def).is_some() {
            return Err(format!("type `{key}` is defined twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, ty: Ty) -> Field {
        Field {
            name: name.into(),
            reads: vec![name.into()],
            ty,
            default: false,
            write: Write::Always,
        }
    }

    #[test]
    fn types_render_and_parse_back() {
        let tys = [
            "()",
            "u64",
            "option<seq<str>>",
            "map<str, (u8, bytes)>",
            "(u8,)",
            "[f32; 3]",
            "result<Page<Entry>, `uuid::Uuid`>",
            "a::b::Item",
            "unit_struct",
        ];
        for t in tys {
            let parsed = parse_ty(t).expect(t);
            assert_eq!(parsed.to_string(), t);
        }
        assert_eq!(parse_ty("(u8)").expect("paren"), Ty::Prim(Prim::U8));
    }

    #[test]
    fn definitions_render_and_parse_back() {
        let mut ttl = field("ttl", Ty::Option(Box::new(Ty::Prim(Prim::U32))));
        ttl.default = true;
        let mut renamed = field("my-key", Ty::Prim(Prim::Str));
        renamed.reads = vec!["my-key".into(), "old \"key\"".into()];
        renamed.write = Write::Maybe;
        let mut types = Types::new();
        types.insert(
            "Put".into(),
            Def::Struct(Struct {
                fields: vec![field("key", Ty::Prim(Prim::Str)), ttl, renamed],
                deny_unknown: true,
            }),
        );
        types.insert(
            "E".into(),
            Def::Enum(Enum {
                repr: Repr::Adjacent("t".into(), "c".into()),
                variants: vec![
                    Variant {
                        name: "A".into(),
                        reads: vec!["A".into(), "a".into()],
                        content: Content::Unit,
                        other: false,
                        written: true,
                    },
                    Variant {
                        name: "B".into(),
                        reads: vec!["B".into()],
                        content: Content::Newtype(Ty::Tuple(vec![
                            Ty::Prim(Prim::U8),
                            Ty::Prim(Prim::U8),
                        ])),
                        other: false,
                        written: true,
                    },
                    Variant {
                        name: "C".into(),
                        reads: vec!["C".into()],
                        content: Content::Struct(Struct {
                            fields: vec![field("x", Ty::Named("Put".into()))],
                            deny_unknown: false,
                        }),
                        other: false,
                        written: false,
                    },
                    Variant {
                        name: "Unknown".into(),
                        reads: Vec::new(),
                        content: Content::Newtype(Ty::Prim(Prim::U8)),
                        other: true,
                        written: true,
                    },
                ],
            }),
        );
        types.insert("Id".into(), Def::Alias(Ty::Prim(Prim::U64)));
        let text: String = types.iter().map(|(k, d)| render_def(k, d)).collect();
        let back = parse_defs(&text).expect("parses");
        assert_eq!(back, types, "{text}");
    }

    #[test]
    fn bad_text_is_reported() {
        assert!(parse_ty("option<u8").is_err());
        assert!(parse_ty("`open").is_err());
        assert!(parse_defs("type A = struct { a: u8 [sometimes] }").is_err());
        assert!(parse_defs("type A = u8\ntype A = u16").is_err());
    }
}
