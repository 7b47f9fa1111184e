//! `#[grid(...)]` on a method, parsed into typed options. Bad keys and values are reported into
//! the [`Ctxt`] and skipped, so all attribute mistakes show at once.

use proc_macro2::Span;
use syn::{Attribute, LitInt, LitStr};

use crate::ctxt::Ctxt;

/// The attribute's path.
pub(crate) const GRID: &str = "grid";
/// `crate = "path"` on the trait: where the `grid` crate is.
const CRATE: &str = "crate";
/// `name = "Service.method"`: the wire name.
const NAME: &str = "name";
/// `id = N`: an explicit handler id.
const ID: &str = "id";
/// `in_capacity = N`: messages the caller may send ahead.
const IN_CAPACITY: &str = "in_capacity";
/// `out_capacity = N`: messages the handler may send ahead.
const OUT_CAPACITY: &str = "out_capacity";
/// `timeout_ms = N`: the default timeout of a call or stream.
const TIMEOUT_MS: &str = "timeout_ms";

/// A value and the span of the token it came from.
#[derive(Clone)]
pub(crate) struct WithSpan<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// The options of one method.
#[derive(Default)]
pub(crate) struct MethodAttrs {
    pub(crate) name: Option<WithSpan<String>>,
    pub(crate) id: Option<WithSpan<u32>>,
    pub(crate) in_capacity: Option<WithSpan<u32>>,
    pub(crate) out_capacity: Option<WithSpan<u32>>,
    pub(crate) timeout_ms: Option<WithSpan<u64>>,
}

/// The arguments of `#[grid::handler(...)]`.
pub(crate) struct ServiceAttrs {
    /// `crate = "path"`: where the `grid` crate is (default `::grid`).
    pub(crate) krate: syn::Path,
}

impl ServiceAttrs {
    /// Parses the macro's arguments, reporting problems into `cx`.
    pub(crate) fn from_args(cx: &Ctxt, args: proc_macro2::TokenStream) -> ServiceAttrs {
        let mut krate: Option<syn::Path> = None;
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident(CRATE) {
                let lit: LitStr = value(&meta, CRATE, "a string", "\"::grid\"")?;
                match lit.parse::<syn::Path>() {
                    Ok(path) if krate.is_none() => krate = Some(path),
                    Ok(_) => cx.error_spanned_by(&meta.path, "duplicate argument `crate`"),
                    Err(_) => {
                        cx.error_spanned_by(&lit, "`crate` takes a path, e.g. `crate = \"::grid\"`")
                    }
                }
                Ok(())
            } else {
                Err(meta.error(
                    "unknown #[grid::handler] argument: the only one is `crate = \"path\"`; per-method options go in #[grid(...)] on the method",
                ))
            }
        });
        if let Err(e) = syn::parse::Parser::parse2(parser, args) {
            cx.syn_error(e);
        }
        ServiceAttrs {
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::grid)),
        }
    }
}

/// Whether `attr` is ours.
pub(crate) fn is_grid(attr: &Attribute) -> bool {
    attr.path().is_ident(GRID)
}

impl MethodAttrs {
    /// Parses every `#[grid(...)]` in `attrs`, reporting problems into `cx`.
    pub(crate) fn from_attrs(cx: &Ctxt, attrs: &[Attribute]) -> MethodAttrs {
        let mut out = MethodAttrs::default();
        for attr in attrs.iter().filter(|a| is_grid(a)) {
            let res = attr.parse_nested_meta(|meta| {
                let key = meta
                    .path
                    .get_ident()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                match key.as_str() {
                    NAME => {
                        let lit: LitStr = value(&meta, &key, "a string", "\"Service.method\"")?;
                        let v = lit.value();
                        if v.is_empty() {
                            cx.error_spanned_by(&lit, "the wire name must not be empty");
                        } else {
                            set(cx, &mut out.name, &meta.path, v, lit.span());
                        }
                    }
                    ID => {
                        let lit: LitInt = value(&meta, &key, "an integer", "7")?;
                        match lit.base10_parse::<u32>() {
                            Ok(0) => cx.error_spanned_by(
                                &lit,
                                "handler id 0 is reserved: use an id from 1 to 4294967295",
                            ),
                            Ok(v) => set(cx, &mut out.id, &meta.path, v, lit.span()),
                            Err(e) => cx.error_spanned_by(
                                &lit,
                                format!("expected a handler id from 1 to 4294967295: {e}"),
                            ),
                        }
                    }
                    IN_CAPACITY | OUT_CAPACITY => {
                        let lit: LitInt = value(&meta, &key, "an integer", "7")?;
                        match lit.base10_parse::<u32>() {
                            Ok(v) if v > 0 => {
                                let slot = if key == IN_CAPACITY {
                                    &mut out.in_capacity
                                } else {
                                    &mut out.out_capacity
                                };
                                set(cx, slot, &meta.path, v, lit.span());
                            }
                            _ => cx.error_spanned_by(
                                &lit,
                                format!("`{key}` must be a whole number of messages, at least 1"),
                            ),
                        }
                    }
                    TIMEOUT_MS => {
                        let lit: LitInt = value(&meta, &key, "an integer", "7")?;
                        match lit.base10_parse::<u64>() {
                            Ok(v) if v > 0 => {
                                set(cx, &mut out.timeout_ms, &meta.path, v, lit.span());
                            }
                            _ => cx.error_spanned_by(
                                &lit,
                                "`timeout_ms` must be a whole number of milliseconds, at least 1",
                            ),
                        }
                    }
                    _ => {
                        return Err(meta.error(
                            "unknown grid attribute: expected one of `name`, `id`, \
                             `in_capacity`, `out_capacity`, `timeout_ms`",
                        ));
                    }
                }
                Ok(())
            });
            if let Err(e) = res {
                cx.syn_error(e);
            }
        }
        out
    }
}

/// Sets an option once; a repeated key is an error on the second one.
fn set<T>(cx: &Ctxt, slot: &mut Option<WithSpan<T>>, path: &syn::Path, value: T, span: Span) {
    if slot.is_some() {
        cx.error_spanned_by(path, "duplicate grid attribute: give each key once");
    } else {
        *slot = Some(WithSpan { value, span });
    }
}

/// The value of `key = value`, with an error that shows the expected form.
fn value<T: syn::parse::Parse>(
    meta: &syn::meta::ParseNestedMeta<'_>,
    key: &str,
    what: &str,
    example: &str,
) -> syn::Result<T> {
    let input = meta.value()?;
    input.parse().map_err(|e: syn::Error| {
        syn::Error::new(
            e.span(),
            format!("`{key}` takes {what}, e.g. `{key} = {example}`"),
        )
    })
}
