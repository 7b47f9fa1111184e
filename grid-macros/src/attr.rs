//! The arguments of `#[grid::handler(...)]` itself. The per-method `#[grid(...)]` options are
//! read by `grid_wire::syntax::MethodAttrs`, shared with grid-build so both read the wire name
//! and id the same way.

use syn::LitStr;

use crate::ctxt::Ctxt;

/// `crate = "path"` on the trait: where the `grid` crate is.
const CRATE: &str = "crate";

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
