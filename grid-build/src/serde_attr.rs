//! The `#[serde(...)]` attributes that change what reaches the wire, read from syn attributes
//! (also inside `#[cfg_attr(…, serde(...))]`, since grid-build cannot evaluate the condition).
//! Attributes that only affect Rust code (`bound`, `borrow`, `crate`, `expecting`, …) are
//! ignored. A malformed attribute is skipped: serde_derive reports it when the crate compiles.

use syn::parse::Parse as _;
use syn::{Attribute, Meta};

/// Serde's rename rules, applied exactly as serde_derive does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenameRule {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

impl RenameRule {
    fn parse(s: &str) -> Option<RenameRule> {
        Some(match s {
            "lowercase" => RenameRule::Lower,
            "UPPERCASE" => RenameRule::Upper,
            "PascalCase" => RenameRule::Pascal,
            "camelCase" => RenameRule::Camel,
            "snake_case" => RenameRule::Snake,
            "SCREAMING_SNAKE_CASE" => RenameRule::ScreamingSnake,
            "kebab-case" => RenameRule::Kebab,
            "SCREAMING-KEBAB-CASE" => RenameRule::ScreamingKebab,
            _ => return None,
        })
    }

    /// A variant name (written in PascalCase in Rust).
    pub(crate) fn variant(self, v: &str) -> String {
        match self {
            RenameRule::Pascal => v.to_owned(),
            RenameRule::Lower => v.to_ascii_lowercase(),
            RenameRule::Upper => v.to_ascii_uppercase(),
            RenameRule::Camel => {
                let mut chars = v.chars();
                chars.next().map_or_else(String::new, |c| {
                    c.to_ascii_lowercase().to_string() + chars.as_str()
                })
            }
            RenameRule::Snake => {
                let mut out = String::new();
                for (i, c) in v.char_indices() {
                    if i > 0 && c.is_uppercase() {
                        out.push('_');
                    }
                    out.push(c.to_ascii_lowercase());
                }
                out
            }
            RenameRule::ScreamingSnake => RenameRule::Snake.variant(v).to_ascii_uppercase(),
            RenameRule::Kebab => RenameRule::Snake.variant(v).replace('_', "-"),
            RenameRule::ScreamingKebab => RenameRule::ScreamingSnake.variant(v).replace('_', "-"),
        }
    }

    /// A field name (written in snake_case in Rust).
    pub(crate) fn field(self, f: &str) -> String {
        match self {
            RenameRule::Lower | RenameRule::Snake => f.to_owned(),
            RenameRule::Upper | RenameRule::ScreamingSnake => f.to_ascii_uppercase(),
            RenameRule::Pascal => {
                let mut out = String::new();
                let mut capitalize = true;
                for c in f.chars() {
                    if c == '_' {
                        capitalize = true;
                    } else if capitalize {
                        out.push(c.to_ascii_uppercase());
                        capitalize = false;
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            RenameRule::Camel => {
                let pascal = RenameRule::Pascal.field(f);
                let mut chars = pascal.chars();
                chars.next().map_or_else(String::new, |c| {
                    c.to_ascii_lowercase().to_string() + chars.as_str()
                })
            }
            RenameRule::Kebab => f.replace('_', "-"),
            RenameRule::ScreamingKebab => f.to_ascii_uppercase().replace('_', "-"),
        }
    }
}

/// A value that may differ between serializing and deserializing
/// (`rename(serialize = "…", deserialize = "…")`).
#[derive(Debug, Clone)]
pub(crate) struct Both<T> {
    pub(crate) ser: Option<T>,
    pub(crate) de: Option<T>,
}

impl<T> Default for Both<T> {
    fn default() -> Self {
        Both {
            ser: None,
            de: None,
        }
    }
}

/// Container attributes (on a struct or enum).
#[derive(Debug, Clone, Default)]
pub(crate) struct Container {
    pub(crate) rename_all: Both<RenameRule>,
    pub(crate) rename_all_fields: Both<RenameRule>,
    pub(crate) deny_unknown_fields: bool,
    pub(crate) default: bool,
    pub(crate) transparent: bool,
    pub(crate) tag: Option<String>,
    pub(crate) content: Option<String>,
    pub(crate) untagged: bool,
    /// `into = "T"`: serialized as `T`.
    pub(crate) into: Option<syn::Type>,
    /// `from = "T"` or `try_from = "T"`: deserialized from `T`.
    pub(crate) from: Option<syn::Type>,
}

/// Field attributes.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldAttrs {
    pub(crate) rename: Both<String>,
    pub(crate) aliases: Vec<String>,
    pub(crate) default: bool,
    pub(crate) skip_serializing: bool,
    pub(crate) skip_deserializing: bool,
    pub(crate) skip_serializing_if: bool,
    pub(crate) flatten: bool,
    /// `with`, `serialize_with` or `deserialize_with`: the module path, as written.
    pub(crate) with: Option<String>,
}

/// Variant attributes.
#[derive(Debug, Clone, Default)]
pub(crate) struct VariantAttrs {
    pub(crate) rename: Both<String>,
    pub(crate) aliases: Vec<String>,
    pub(crate) rename_all: Both<RenameRule>,
    pub(crate) skip_serializing: bool,
    pub(crate) skip_deserializing: bool,
    pub(crate) other: bool,
    pub(crate) untagged: bool,
    pub(crate) with: Option<String>,
}

/// Every `serde(...)` list in `attrs`, including those inside `cfg_attr`.
fn serde_lists(attrs: &[Attribute]) -> Vec<syn::MetaList> {
    let mut out = Vec::new();
    for a in attrs {
        collect_serde(&a.meta, &mut out);
    }
    out
}

fn collect_serde(meta: &Meta, out: &mut Vec<syn::MetaList>) {
    let Meta::List(list) = meta else { return };
    if list.path.is_ident("serde") {
        out.push(list.clone());
    } else if list.path.is_ident("cfg_attr") {
        let nested = list
            .parse_args_with(syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated);
        if let Ok(nested) = nested {
            for m in nested.iter().skip(1) {
                collect_serde(m, out);
            }
        }
    }
}

/// True when `attrs` derive `trait_name` (`Serialize` or `Deserialize`, by last path segment),
/// also inside `cfg_attr`.
pub(crate) fn derives(attrs: &[Attribute], trait_name: &str) -> bool {
    fn in_meta(meta: &Meta, trait_name: &str) -> bool {
        let Meta::List(list) = meta else { return false };
        let nested = list
            .parse_args_with(syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated);
        let Ok(nested) = nested else { return false };
        if list.path.is_ident("derive") {
            nested.iter().any(|m| {
                m.path()
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == trait_name)
            })
        } else if list.path.is_ident("cfg_attr") {
            nested.iter().skip(1).any(|m| in_meta(m, trait_name))
        } else {
            false
        }
    }
    attrs.iter().any(|a| in_meta(&a.meta, trait_name))
}

/// Calls `each(key, meta)` for every item of every `serde(...)` list.
fn for_each(attrs: &[Attribute], mut each: impl FnMut(&str, &syn::meta::ParseNestedMeta<'_>)) {
    for list in serde_lists(attrs) {
        let _ = list.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            each(&key, &meta);
            // Consume whatever the key carries so the next key parses.
            if meta.input.peek(syn::Token![=]) {
                let _ = meta.value().and_then(|v| v.parse::<syn::Expr>());
            } else if meta.input.peek(syn::token::Paren) {
                let _ = meta.parse_nested_meta(|inner| {
                    if inner.input.peek(syn::Token![=]) {
                        let _ = inner.value().and_then(|v| v.parse::<syn::Expr>());
                    }
                    Ok(())
                });
            }
            Ok(())
        });
    }
}

/// The string of `key = "…"`, without consuming the caller's stream (it forks).
fn str_value(meta: &syn::meta::ParseNestedMeta<'_>) -> Option<String> {
    let fork = meta.input.fork();
    let _: syn::Token![=] = fork.parse().ok()?;
    let lit: syn::LitStr = fork.parse().ok()?;
    Some(lit.value())
}

/// `key = "…"` or `key(serialize = "…", deserialize = "…")`.
fn both_str(meta: &syn::meta::ParseNestedMeta<'_>) -> Both<String> {
    if let Some(v) = str_value(meta) {
        return Both {
            ser: Some(v.clone()),
            de: Some(v),
        };
    }
    both_parenthesized(&meta.input.fork()).unwrap_or_default()
}

/// `(serialize = "…", deserialize = "…")`.
fn both_parenthesized(input: syn::parse::ParseStream<'_>) -> syn::Result<Both<String>> {
    let content;
    syn::parenthesized!(content in input);
    let list = content.parse_terminated(syn::MetaNameValue::parse, syn::Token![,])?;
    let mut out = Both::default();
    for nv in list {
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) = &nv.value
        else {
            continue;
        };
        if nv.path.is_ident("serialize") {
            out.ser = Some(s.value());
        } else if nv.path.is_ident("deserialize") {
            out.de = Some(s.value());
        }
    }
    Ok(out)
}

fn both_rule(meta: &syn::meta::ParseNestedMeta<'_>) -> Both<RenameRule> {
    let b = both_str(meta);
    Both {
        ser: b.ser.as_deref().and_then(RenameRule::parse),
        de: b.de.as_deref().and_then(RenameRule::parse),
    }
}

fn type_value(meta: &syn::meta::ParseNestedMeta<'_>) -> Option<syn::Type> {
    str_value(meta).and_then(|s| syn::parse_str(&s).ok())
}

impl Container {
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> Container {
        let mut c = Container::default();
        for_each(attrs, |key, meta| match key {
            "rename_all" => c.rename_all = both_rule(meta),
            "rename_all_fields" => c.rename_all_fields = both_rule(meta),
            "deny_unknown_fields" => c.deny_unknown_fields = true,
            "default" => c.default = true,
            "transparent" => c.transparent = true,
            "tag" => c.tag = str_value(meta),
            "content" => c.content = str_value(meta),
            "untagged" => c.untagged = true,
            "into" => c.into = type_value(meta),
            "from" | "try_from" => c.from = type_value(meta),
            _ => {}
        });
        c
    }
}

impl FieldAttrs {
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> FieldAttrs {
        let mut f = FieldAttrs::default();
        for_each(attrs, |key, meta| match key {
            "rename" => f.rename = both_str(meta),
            "alias" => f.aliases.extend(str_value(meta)),
            "default" => f.default = true,
            "skip" => {
                f.skip_serializing = true;
                f.skip_deserializing = true;
            }
            "skip_serializing" => f.skip_serializing = true,
            "skip_deserializing" => f.skip_deserializing = true,
            "skip_serializing_if" => f.skip_serializing_if = true,
            "flatten" => f.flatten = true,
            "with" | "serialize_with" | "deserialize_with" => {
                f.with = Some(str_value(meta).unwrap_or_else(|| key.to_owned()));
            }
            _ => {}
        });
        f
    }
}

impl VariantAttrs {
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> VariantAttrs {
        let mut v = VariantAttrs::default();
        for_each(attrs, |key, meta| match key {
            "rename" => v.rename = both_str(meta),
            "alias" => v.aliases.extend(str_value(meta)),
            "rename_all" => v.rename_all = both_rule(meta),
            "skip" => {
                v.skip_serializing = true;
                v.skip_deserializing = true;
            }
            "skip_serializing" => v.skip_serializing = true,
            "skip_deserializing" => v.skip_deserializing = true,
            "other" => v.other = true,
            "untagged" => v.untagged = true,
            "with" | "serialize_with" | "deserialize_with" => {
                v.with = Some(str_value(meta).unwrap_or_else(|| key.to_owned()));
            }
            _ => {}
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(src: &str) -> Vec<Attribute> {
        let item: syn::ItemStruct = syn::parse_str(&format!("{src} struct S;")).expect("parses");
        item.attrs
    }

    #[test]
    fn rename_rules_match_serde() {
        assert_eq!(RenameRule::Snake.variant("TooMany"), "too_many");
        assert_eq!(RenameRule::Kebab.variant("TooMany"), "too-many");
        assert_eq!(RenameRule::ScreamingSnake.variant("TooMany"), "TOO_MANY");
        assert_eq!(RenameRule::Camel.variant("TooMany"), "tooMany");
        assert_eq!(RenameRule::Lower.variant("TooMany"), "toomany");
        assert_eq!(RenameRule::Camel.field("ttl_secs"), "ttlSecs");
        assert_eq!(RenameRule::Pascal.field("ttl_secs"), "TtlSecs");
        assert_eq!(RenameRule::ScreamingKebab.field("ttl_secs"), "TTL-SECS");
    }

    #[test]
    fn container_and_field_attributes_are_read_with_cfg_attr() {
        let a = attrs(
            r#"#[derive(Debug, serde::Serialize)]
               #[cfg_attr(feature = "x", derive(Deserialize), serde(tag = "kind"))]
               #[serde(rename_all(serialize = "camelCase"), deny_unknown_fields, bound = "T: X")]"#,
        );
        let c = Container::from_attrs(&a);
        assert_eq!(c.tag.as_deref(), Some("kind"));
        assert!(c.deny_unknown_fields);
        assert_eq!(c.rename_all.ser, Some(RenameRule::Camel));
        assert_eq!(c.rename_all.de, None);
        assert!(derives(&a, "Serialize") && derives(&a, "Deserialize"));

        let f = FieldAttrs::from_attrs(&attrs(
            r#"#[serde(rename = "k", alias = "a", alias = "b", default = "zero", skip_serializing_if = "Option::is_none")]"#,
        ));
        assert_eq!(f.rename.ser.as_deref(), Some("k"));
        assert_eq!(f.aliases, ["a", "b"]);
        assert!(f.default && f.skip_serializing_if);
    }
}
