//! From a type as written in a handler signature to its wire structure ([`Ty`]), through the
//! definitions of the scanned sources, following serde's rules.
//!
//! A path is resolved like rustc would in the common cases: a generic parameter being
//! instantiated, a definition in the same module, a `use` import, a well-known std (or
//! `bytes`/`serde_bytes`/`indexmap`/`hashbrown`) type, a glob import, and finally the one
//! definition of that name in the sources. Anything else — a type of another crate, a type with
//! a hand-written serde impl, a field with `#[serde(with)]`, a macro type — becomes
//! [`Ty::Opaque`] with its normalised spelling, which the check compares as written.

use std::collections::{HashMap, HashSet};

use quote::ToTokens;

use crate::items::{local_module, DefItem, Index, ModPath, Target, TypeDef};
use crate::schema::{
    self, Content, Def, Enum, Field, Prim, Repr, Struct, Ty, Types, Variant, Write,
};
use crate::serde_attr::{self, Container, FieldAttrs, VariantAttrs};

/// Generic parameters being instantiated: name → wire type.
type Subst = HashMap<String, Ty>;

/// How deep aliases and re-exports are followed before giving up (a cycle in the sources).
const MAX_DEPTH: usize = 32;

/// Resolves types against an [`Index`], collecting every named definition it reaches.
pub(crate) struct Resolver<'a> {
    index: &'a Index,
    /// The definitions reached so far, by key.
    pub(crate) types: Types,
    /// Keys whose definition is being built (a recursive type refers to itself by key).
    building: HashSet<String>,
    depth: usize,
}

/// A path resolved to something.
enum Found {
    Def(usize),
    External(Vec<String>),
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(index: &'a Index) -> Resolver<'a> {
        Resolver {
            index,
            types: Types::new(),
            building: HashSet::new(),
            depth: 0,
        }
    }

    /// The wire type of `ty`, written in `module`.
    pub(crate) fn ty(&mut self, ty: &syn::Type, module: &ModPath) -> Ty {
        self.ty_in(ty, module, &Subst::new())
    }

    fn ty_in(&mut self, ty: &syn::Type, module: &ModPath, subst: &Subst) -> Ty {
        match ty {
            syn::Type::Paren(p) => self.ty_in(&p.elem, module, subst),
            syn::Type::Group(g) => self.ty_in(&g.elem, module, subst),
            syn::Type::Reference(r) => self.ty_in(&r.elem, module, subst),
            syn::Type::Tuple(t) if t.elems.is_empty() => Ty::Prim(Prim::Unit),
            syn::Type::Tuple(t) => Ty::Tuple(
                t.elems
                    .iter()
                    .map(|e| self.ty_in(e, module, subst))
                    .collect(),
            ),
            syn::Type::Slice(s) => Ty::Seq(Box::new(self.ty_in(&s.elem, module, subst))),
            syn::Type::Array(a) => {
                let len = match &a.len {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Int(n),
                        ..
                    }) => n.base10_parse::<usize>().ok(),
                    _ => None,
                };
                match len {
                    Some(0) => Ty::Prim(Prim::UnitStruct),
                    Some(n) => Ty::Array(Box::new(self.ty_in(&a.elem, module, subst)), n),
                    None => Ty::Opaque(tokens(ty)),
                }
            }
            syn::Type::Path(p) if p.qself.is_none() => self.path(&p.path, module, subst),
            other => Ty::Opaque(tokens(other)),
        }
    }

    fn path(&mut self, path: &syn::Path, module: &ModPath, subst: &Subst) -> Ty {
        let idents: Vec<String> = path.segments.iter().map(|s| unraw(&s.ident)).collect();
        let last = path.segments.last();
        let args: Vec<&syn::Type> = last
            .map(|s| match &s.arguments {
                syn::PathArguments::AngleBracketed(ab) => ab
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        syn::GenericArgument::Type(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
        if path.leading_colon.is_none() && idents.len() == 1 && args.is_empty() {
            if let Some(t) = subst.get(&idents[0]) {
                return t.clone();
            }
        }
        let found = if path.leading_colon.is_some() {
            Some(Found::External(idents.clone()))
        } else {
            self.lookup(module, &idents, 0)
        };
        match found {
            Some(Found::Def(i)) => self.instantiate(i, &args, module, subst),
            Some(Found::External(full)) => self
                .known_external(&full, &args, module, subst)
                .unwrap_or_else(|| Ty::Opaque(opaque_text(&full, last))),
            None => {
                let name = &idents[idents.len() - 1];
                if idents.len() == 1 {
                    if let Some(t) = self.builtin(name, &args, module, subst) {
                        return t;
                    }
                }
                Ty::Opaque(opaque_text(&idents, last))
            }
        }
    }

    /// What `idents` names from `module`.
    fn lookup(&self, module: &ModPath, idents: &[String], depth: usize) -> Option<Found> {
        if depth > MAX_DEPTH {
            return None;
        }
        let (name, dirs) = idents.split_last()?;
        if dirs.is_empty() {
            if let [i] = self.index.defs_in(module, name)[..] {
                return Some(Found::Def(i));
            }
            if let Some(t) = self.index.import(module, name) {
                return self.follow(module, t, depth);
            }
            if is_builtin_name(name) {
                return None;
            }
            for g in self.index.globs(module) {
                if let Target::Local(m, _) = g {
                    if let [i] = self.index.defs_in(m, name)[..] {
                        return Some(Found::Def(i));
                    }
                }
            }
            return match self.index.defs_named(name)[..] {
                [i] => Some(Found::Def(i)),
                _ => None,
            };
        }
        if matches!(dirs[0].as_str(), "std" | "core" | "alloc") {
            return Some(Found::External(idents.to_vec()));
        }
        if let Some(m) = local_module(module, dirs) {
            return self.lookup_in(&m, name, depth);
        }
        // `child::Item`, or `imported_module::Item`, or another crate.
        let mut child = module.clone();
        child.push(dirs[0].clone());
        if self.index.has_module(&child) {
            let mut m = child;
            m.extend(dirs[1..].iter().cloned());
            return self.lookup_in(&m, name, depth);
        }
        if let Some(Target::Local(m, item)) = self.index.import(module, &dirs[0]) {
            let mut m = m.clone();
            m.push(item.clone());
            m.extend(dirs[1..].iter().cloned());
            return self.lookup_in(&m, name, depth);
        }
        if let Some(Target::External(p)) = self.index.import(module, &dirs[0]) {
            let mut full = p.clone();
            full.extend(idents[1..].iter().cloned());
            return Some(Found::External(full));
        }
        Some(Found::External(idents.to_vec()))
    }

    /// `name` as seen in `module` from outside: its definition, or what it re-exports.
    fn lookup_in(&self, module: &ModPath, name: &str, depth: usize) -> Option<Found> {
        if let [i] = self.index.defs_in(module, name)[..] {
            return Some(Found::Def(i));
        }
        match self.index.import(module, name) {
            Some(t) => self.follow(module, t, depth),
            None => None,
        }
    }

    fn follow(&self, from: &ModPath, target: &Target, depth: usize) -> Option<Found> {
        match target {
            Target::Local(m, item) => self.lookup_in(m, item, depth + 1),
            Target::External(p) => {
                // A 2018 path starting with a child module of the importing module is local.
                if let Some((first, rest)) = p.split_first() {
                    let mut child = from.clone();
                    child.push(first.clone());
                    if self.index.has_module(&child) {
                        let (item, dirs) = rest.split_last()?;
                        child.extend(dirs.iter().cloned());
                        return self.lookup_in(&child, item, depth + 1);
                    }
                }
                Some(Found::External(p.clone()))
            }
        }
    }

    /// A std type by its name (a prelude name, a primitive, or a std path's last segment).
    fn builtin(
        &mut self,
        name: &str,
        args: &[&syn::Type],
        module: &ModPath,
        subst: &Subst,
    ) -> Option<Ty> {
        let arg = |i: usize, r: &mut Resolver<'a>| -> Option<Ty> {
            args.get(i).map(|t| r.ty_in(t, module, subst))
        };
        let prim = |p: Prim| Some(Ty::Prim(p));
        match name {
            "bool" => prim(Prim::Bool),
            "char" => prim(Prim::Char),
            "str" | "String" | "PathBuf" | "Path" => prim(Prim::Str),
            "f32" => prim(Prim::F32),
            "f64" => prim(Prim::F64),
            "u8" | "NonZeroU8" => prim(Prim::U8),
            "u16" | "NonZeroU16" => prim(Prim::U16),
            "u32" | "NonZeroU32" => prim(Prim::U32),
            "u64" | "usize" | "NonZeroU64" | "NonZeroUsize" => prim(Prim::U64),
            "u128" | "NonZeroU128" => prim(Prim::U128),
            "i8" | "NonZeroI8" => prim(Prim::I8),
            "i16" | "NonZeroI16" => prim(Prim::I16),
            "i32" | "NonZeroI32" => prim(Prim::I32),
            "i64" | "isize" | "NonZeroI64" | "NonZeroIsize" => prim(Prim::I64),
            "i128" | "NonZeroI128" => prim(Prim::I128),
            "PhantomData" => prim(Prim::UnitStruct),
            "Box" | "Rc" | "Arc" | "Cow" | "Cell" | "RefCell" | "Mutex" | "RwLock" | "Wrapping"
            | "Saturating" | "Reverse" | "NonZero" => {
                // `Box<str>`, `Cow<'_, str>`, `Box<[T]>` land on their element's rules.
                arg(0, self)
            }
            "Option" => Some(Ty::Option(Box::new(arg(0, self)?))),
            "Vec" | "VecDeque" | "LinkedList" | "HashSet" | "BTreeSet" | "BinaryHeap" => {
                Some(Ty::Seq(Box::new(arg(0, self)?)))
            }
            "HashMap" | "BTreeMap" => {
                let k = arg(0, self)?;
                Some(Ty::Map(Box::new(k), Box::new(arg(1, self)?)))
            }
            "Result" if args.len() == 2 => {
                let t = arg(0, self)?;
                Some(Ty::Result(Box::new(t), Box::new(arg(1, self)?)))
            }
            "Duration" | "SystemTime" | "IpAddr" | "Ipv4Addr" | "Ipv6Addr" | "SocketAddr"
            | "SocketAddrV4" | "SocketAddrV6" | "OsString" | "OsStr" => {
                Some(Ty::Opaque(format!("std::{}", std_module(name))))
            }
            _ => None,
        }
    }

    /// A type of another crate whose serde form grid-build knows.
    fn known_external(
        &mut self,
        full: &[String],
        args: &[&syn::Type],
        module: &ModPath,
        subst: &Subst,
    ) -> Option<Ty> {
        let (name, dirs) = full.split_last()?;
        let krate = dirs.first().map(String::as_str);
        match (krate, name.as_str()) {
            (Some("std" | "core" | "alloc"), _) => self.builtin(name, args, module, subst),
            (Some("bytes"), "Bytes" | "BytesMut") => Some(Ty::Prim(Prim::Bytes)),
            (Some("serde_bytes"), "ByteBuf" | "Bytes") => Some(Ty::Prim(Prim::Bytes)),
            (Some("indexmap"), "IndexMap") | (Some("hashbrown"), "HashMap") => {
                self.builtin("HashMap", args, module, subst)
            }
            (Some("indexmap"), "IndexSet") | (Some("hashbrown"), "HashSet") => {
                self.builtin("HashSet", args, module, subst)
            }
            _ => None,
        }
    }

    /// The key of definition `i`: its name, or its module path when the name is not unique in
    /// the sources (or is a word of the lock's grammar).
    fn base_key(&self, i: usize) -> String {
        let d = &self.index.defs[i];
        let unique = self.index.defs_named(&d.ident).len() == 1;
        if unique && !schema::RESERVED.contains(&d.ident.as_str()) {
            return d.ident.clone();
        }
        let mut parts = if d.module.is_empty() {
            vec!["crate".to_owned()]
        } else {
            d.module.clone()
        };
        parts.push(d.ident.clone());
        parts.join("::")
    }

    /// The full path of definition `i` (`crate::model::Item`), with `args` rendered.
    fn path_of(&self, i: usize, args: &[Ty]) -> String {
        let d = &self.index.defs[i];
        let mut parts = vec!["crate".to_owned()];
        parts.extend(d.module.iter().cloned());
        parts.push(d.ident.clone());
        let mut s = parts.join("::");
        if !args.is_empty() {
            let shown: Vec<String> = args
                .iter()
                .map(|t| t.to_string().replace('`', ""))
                .collect();
            s = format!("{s}<{}>", shown.join(", "));
        }
        s
    }

    fn instantiate(
        &mut self,
        i: usize,
        args: &[&syn::Type],
        module: &ModPath,
        subst: &Subst,
    ) -> Ty {
        let index = self.index;
        let def = &index.defs[i];
        let params: Vec<&syn::TypeParam> = def.generics().type_params().collect();
        if def.generics().const_params().next().is_some() {
            return Ty::Opaque(self.path_of(i, &[]));
        }
        let mut arg_tys = Vec::new();
        for (n, p) in params.iter().enumerate() {
            match (args.get(n), &p.default) {
                (Some(a), _) => arg_tys.push(self.ty_in(a, module, subst)),
                (None, Some(d)) => arg_tys.push(self.ty_in(d, &def.module, &Subst::new())),
                (None, None) => return Ty::Opaque(self.path_of(i, &[])),
            }
        }
        let inner: Subst = params
            .iter()
            .map(|p| p.ident.to_string())
            .zip(arg_tys.iter().cloned())
            .collect();
        if let DefItem::Alias(a) = &def.item {
            if self.depth > MAX_DEPTH {
                return Ty::Opaque(self.path_of(i, &[]));
            }
            self.depth += 1;
            let t = self.ty_in(&a.ty, &def.module, &inner);
            self.depth -= 1;
            return t;
        }
        let mut key = self.base_key(i);
        if !arg_tys.is_empty() {
            let shown: Vec<String> = arg_tys.iter().map(ToString::to_string).collect();
            key = format!("{key}<{}>", shown.join(", "));
        }
        if self.types.contains_key(&key) || self.building.contains(&key) {
            return Ty::Named(key);
        }
        self.building.insert(key.clone());
        let built = self.build(def, &inner);
        self.building.remove(&key);
        match built {
            Some(d) => {
                self.types.insert(key.clone(), d);
                Ty::Named(key)
            }
            // A hand-written serde impl: named by its full path, which does not change when
            // another type of the same name appears elsewhere.
            None => Ty::Opaque(self.path_of(i, &arg_tys)),
        }
    }

    /// The structure of a struct or enum; `None` when serde's impl is not derived.
    fn build(&mut self, def: &TypeDef, subst: &Subst) -> Option<Def> {
        let attrs = match &def.item {
            DefItem::Struct(s) => &s.attrs,
            DefItem::Enum(e) => &e.attrs,
            DefItem::Alias(_) => return None,
        };
        if !serde_attr::derives(attrs, "Serialize") || !serde_attr::derives(attrs, "Deserialize") {
            return None;
        }
        let c = Container::from_attrs(attrs);
        if c.into.is_some() || c.from.is_some() {
            // Serialized as another type: known only when both directions use the same one.
            return match (&c.into, &c.from) {
                (Some(a), Some(b)) if tokens(a) == tokens(b) => {
                    Some(Def::Alias(self.ty_in(a, &def.module, subst)))
                }
                _ => None,
            };
        }
        match &def.item {
            DefItem::Struct(s) => self.build_struct(s, &c, &def.module, subst),
            DefItem::Enum(e) => self.build_enum(e, &c, &def.module, subst),
            DefItem::Alias(_) => None,
        }
    }

    fn build_struct(
        &mut self,
        s: &syn::ItemStruct,
        c: &Container,
        module: &ModPath,
        subst: &Subst,
    ) -> Option<Def> {
        match &s.fields {
            syn::Fields::Unit => Some(Def::Alias(Ty::Prim(Prim::UnitStruct))),
            syn::Fields::Unnamed(u) => {
                let tys: Vec<Ty> = u
                    .unnamed
                    .iter()
                    .map(|f| self.field_ty(f, module, subst))
                    .collect();
                Some(Def::Alias(match tys.len() {
                    0 => Ty::Prim(Prim::UnitStruct),
                    1 => tys.into_iter().next()?,
                    _ => Ty::Tuple(tys),
                }))
            }
            syn::Fields::Named(n) => {
                if c.transparent {
                    let f = n
                        .named
                        .iter()
                        .find(|f| !FieldAttrs::from_attrs(&f.attrs).skip_serializing)?;
                    return Some(Def::Alias(self.field_ty(f, module, subst)));
                }
                let st = self.fields(
                    n,
                    c.rename_all.clone(),
                    c.default,
                    c.deny_unknown_fields,
                    module,
                    subst,
                )?;
                Some(Def::Struct(st))
            }
        }
    }

    fn field_ty(&mut self, f: &syn::Field, module: &ModPath, subst: &Subst) -> Ty {
        let a = FieldAttrs::from_attrs(&f.attrs);
        match &a.with {
            None => self.ty_in(&f.ty, module, subst),
            Some(w) if w == "serde_bytes" => Ty::Prim(Prim::Bytes),
            Some(w) => Ty::Opaque(format!("{} with {w}", tokens(&f.ty))),
        }
    }

    /// The named fields of a struct or struct variant; `None` when one cannot be described
    /// (a flattened field that is not a struct of the sources).
    fn fields(
        &mut self,
        n: &syn::FieldsNamed,
        rename_all: serde_attr::Both<serde_attr::RenameRule>,
        container_default: bool,
        deny_unknown: bool,
        module: &ModPath,
        subst: &Subst,
    ) -> Option<Struct> {
        let mut fields = Vec::new();
        for f in &n.named {
            let a = FieldAttrs::from_attrs(&f.attrs);
            let ty = self.field_ty(f, module, subst);
            if a.flatten {
                let Ty::Named(key) = &ty else { return None };
                let Some(Def::Struct(inner)) = self.types.get(key) else {
                    return None;
                };
                fields.extend(inner.fields.iter().cloned());
                continue;
            }
            let ident = f.ident.as_ref().map(unraw).unwrap_or_default();
            let ser = a
                .rename
                .ser
                .clone()
                .or_else(|| rename_all.ser.map(|r| r.field(&ident)))
                .unwrap_or_else(|| ident.clone());
            let de = a
                .rename
                .de
                .clone()
                .or_else(|| rename_all.de.map(|r| r.field(&ident)))
                .unwrap_or_else(|| ident.clone());
            let write = if a.skip_serializing {
                Write::Never
            } else if a.skip_serializing_if {
                Write::Maybe
            } else {
                Write::Always
            };
            let reads = if a.skip_deserializing {
                Vec::new()
            } else {
                let mut r = vec![de];
                r.extend(a.aliases.iter().cloned());
                r
            };
            if write == Write::Never && reads.is_empty() {
                continue;
            }
            // serde_derive reads a missing `Option` field as `None` (unless `deserialize_with`).
            let default = a.default
                || container_default
                || a.skip_deserializing
                || (a.with.is_none() && matches!(ty, Ty::Option(_)));
            fields.push(Field {
                name: ser,
                reads,
                ty,
                default,
                write,
            });
        }
        Some(Struct {
            fields,
            deny_unknown,
        })
    }

    fn build_enum(
        &mut self,
        e: &syn::ItemEnum,
        c: &Container,
        module: &ModPath,
        subst: &Subst,
    ) -> Option<Def> {
        let repr = match (&c.tag, &c.content, c.untagged) {
            (_, _, true) => Repr::Untagged,
            (Some(t), Some(ct), false) => Repr::Adjacent(t.clone(), ct.clone()),
            (Some(t), None, false) => Repr::Internal(t.clone()),
            _ => Repr::External,
        };
        let mut variants = Vec::new();
        for v in &e.variants {
            let a = VariantAttrs::from_attrs(&v.attrs);
            if a.untagged {
                // Mixed tagged and untagged variants: not described.
                return None;
            }
            if a.skip_serializing && a.skip_deserializing {
                continue;
            }
            let ident = unraw(&v.ident);
            let ser = a
                .rename
                .ser
                .clone()
                .or_else(|| c.rename_all.ser.map(|r| r.variant(&ident)))
                .unwrap_or_else(|| ident.clone());
            let de = a
                .rename
                .de
                .clone()
                .or_else(|| c.rename_all.de.map(|r| r.variant(&ident)))
                .unwrap_or_else(|| ident.clone());
            let content = match (&v.fields, &a.with) {
                (syn::Fields::Unit, _) => Content::Unit,
                (_, Some(w)) => Content::Newtype(Ty::Opaque(format!("{ident} with {w}"))),
                (syn::Fields::Unnamed(u), None) => {
                    let mut tys: Vec<Ty> = u
                        .unnamed
                        .iter()
                        .map(|f| self.field_ty(f, module, subst))
                        .collect();
                    Content::Newtype(match tys.len() {
                        0 => Ty::Prim(Prim::UnitStruct),
                        1 => tys.remove(0),
                        _ => Ty::Tuple(tys),
                    })
                }
                (syn::Fields::Named(n), None) => {
                    let rule = if a.rename_all.ser.is_some() || a.rename_all.de.is_some() {
                        a.rename_all.clone()
                    } else {
                        c.rename_all_fields.clone()
                    };
                    Content::Struct(self.fields(
                        n,
                        rule,
                        false,
                        c.deny_unknown_fields,
                        module,
                        subst,
                    )?)
                }
            };
            let reads = if a.skip_deserializing {
                Vec::new()
            } else {
                let mut r = vec![de];
                r.extend(a.aliases.iter().cloned());
                r
            };
            variants.push(Variant {
                name: ser,
                reads,
                content,
                other: a.other,
                written: !a.skip_serializing,
            });
        }
        Some(Def::Enum(Enum { repr, variants }))
    }
}

fn std_module(name: &str) -> String {
    let m = match name {
        "Duration" | "SystemTime" => "time",
        "OsString" | "OsStr" => "ffi",
        _ => "net",
    };
    format!("{m}::{name}")
}

/// Names that a bare path resolves to a std type when no definition or import says otherwise.
fn is_builtin_name(name: &str) -> bool {
    matches!(
        name,
        "bool"
            | "char"
            | "str"
            | "String"
            | "f32"
            | "f64"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "usize"
            | "i8"
            | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "isize"
            | "Option"
            | "Vec"
            | "Box"
            | "Result"
    )
}

/// A normalised spelling for a type grid-build cannot see into.
fn opaque_text(path: &[String], last: Option<&syn::PathSegment>) -> String {
    let mut s = path.join("::");
    if let Some(syn::PathArguments::AngleBracketed(ab)) = last.map(|l| &l.arguments) {
        let args: Vec<String> = ab
            .args
            .iter()
            .filter(|a| !matches!(a, syn::GenericArgument::Lifetime(_)))
            .map(tokens)
            .collect();
        if !args.is_empty() {
            s.push('<');
            s.push_str(&args.join(", "));
            s.push('>');
        }
    }
    s
}

fn unraw(ident: &syn::Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map_or(s.clone(), str::to_owned)
}

/// Tokens as text with the spacing normalised (`Vec < u8 >` → `Vec<u8>`), without backquotes.
pub(crate) fn tokens(t: &impl ToTokens) -> String {
    let s = t.to_token_stream().to_string();
    let mut out = String::with_capacity(s.len());
    for part in s.split(' ') {
        let glue = matches!(part, "<" | ">" | "," | "::" | ")" | "]" | ">>" | ";")
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
    out.replace('`', "")
}
