//! How a `#[grid::handler]` trait method reads, at the level of syntax. The macro builds its IR
//! from [`HandlerDecl`]; grid-build describes handlers for its lock file with the same type, so
//! the two cannot disagree about a wire name, an id, a shape or which arguments form the request.
//!
//! Reading never fails: problems with `#[grid(...)]` options are pushed into the caller's error
//! list, spanned on the offending token, and the declaration is built as far as it can be. The
//! macro reports those errors (and runs its own checks on the result); grid-build ignores them,
//! because the compiler will show the macro's errors anyway.

use proc_macro2::Span;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, LitInt, LitStr, Pat, PatType, PathArguments,
    ReturnType, TraitItemFn, Type,
};

use crate::Shape;

/// The attribute's path: `#[grid(...)]`.
pub const GRID: &str = "grid";
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
#[derive(Debug, Clone)]
pub struct WithSpan<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

/// The `#[grid(...)]` options of one method.
#[derive(Debug, Default, Clone)]
pub struct MethodAttrs {
    /// `name = "…"`: the wire name.
    pub name: Option<WithSpan<String>>,
    /// `id = N`: the handler id.
    pub id: Option<WithSpan<u32>>,
    /// `in_capacity = N`.
    pub in_capacity: Option<WithSpan<u32>>,
    /// `out_capacity = N`.
    pub out_capacity: Option<WithSpan<u32>>,
    /// `timeout_ms = N`.
    pub timeout_ms: Option<WithSpan<u64>>,
}

/// Whether `attr` is `#[grid(...)]`.
pub fn is_grid_attr(attr: &Attribute) -> bool {
    attr.path().is_ident(GRID)
}

impl MethodAttrs {
    /// Parses every `#[grid(...)]` in `attrs`; problems go into `errors` and the key is skipped,
    /// so all attribute mistakes show at once.
    pub fn parse(attrs: &[Attribute], errors: &mut Vec<syn::Error>) -> MethodAttrs {
        let mut out = MethodAttrs::default();
        for attr in attrs.iter().filter(|a| is_grid_attr(a)) {
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
                            errors.push(spanned(&lit, "the wire name must not be empty"));
                        } else {
                            set(errors, &mut out.name, &meta.path, v, lit.span());
                        }
                    }
                    ID => {
                        let lit: LitInt = value(&meta, &key, "an integer", "7")?;
                        match lit.base10_parse::<u32>() {
                            Ok(0) => errors.push(spanned(
                                &lit,
                                "handler id 0 is reserved: use an id from 1 to 4294967295",
                            )),
                            Ok(v) => set(errors, &mut out.id, &meta.path, v, lit.span()),
                            Err(e) => errors.push(spanned(
                                &lit,
                                format!("expected a handler id from 1 to 4294967295: {e}"),
                            )),
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
                                set(errors, slot, &meta.path, v, lit.span());
                            }
                            _ => errors.push(spanned(
                                &lit,
                                format!("`{key}` must be a whole number of messages, at least 1"),
                            )),
                        }
                    }
                    TIMEOUT_MS => {
                        let lit: LitInt = value(&meta, &key, "an integer", "7")?;
                        match lit.base10_parse::<u64>() {
                            Ok(v) if v > 0 => {
                                set(errors, &mut out.timeout_ms, &meta.path, v, lit.span());
                            }
                            _ => errors.push(spanned(
                                &lit,
                                "`timeout_ms` must be a whole number of milliseconds, at least 1",
                            )),
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
                errors.push(e);
            }
        }
        out
    }
}

fn spanned(tokens: &impl quote::ToTokens, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new_spanned(tokens, msg)
}

/// Sets an option once; a repeated key is an error on the second one.
fn set<T>(
    errors: &mut Vec<syn::Error>,
    slot: &mut Option<WithSpan<T>>,
    path: &syn::Path,
    value: T,
    span: Span,
) {
    if slot.is_some() {
        errors.push(spanned(
            path,
            "duplicate grid attribute: give each key once",
        ));
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

/// What an argument after `&self` is, told apart by its type.
#[derive(Debug, Clone, Copy)]
pub enum ArgKind<'a> {
    /// `&grid::Context` (any path ending in `Context`, behind a reference): not on the wire.
    Context,
    /// `grid::ResponseSender<T>`: the handler's output items, of type `T`.
    Sender(&'a Type),
    /// `grid::RequestReceiver<T>`: the caller's input items, of type `T`.
    Receiver(&'a Type),
    /// A part of the request.
    Plain,
}

impl<'a> ArgKind<'a> {
    /// The kind of an argument of type `ty`.
    pub fn of(ty: &'a Type) -> ArgKind<'a> {
        if let Type::Reference(r) = ty {
            if let Type::Path(p) = &*r.elem {
                if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Context")
                {
                    return ArgKind::Context;
                }
            }
        }
        if let Some((name, inner)) = single_generic(ty) {
            if name == "ResponseSender" {
                return ArgKind::Sender(inner);
            }
            if name == "RequestReceiver" {
                return ArgKind::Receiver(inner);
            }
        }
        ArgKind::Plain
    }
}

/// `Name<T>` as (`Name`, `T`), for a path type whose last segment has exactly one type argument.
fn single_generic(ty: &Type) -> Option<(&Ident, &Type)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    let PathArguments::AngleBracketed(ab) = &last.arguments else {
        return None;
    };
    let mut types = ab.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    let first = types.next()?;
    types.next().is_none().then_some((&last.ident, first))
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments) as (`T`, `E`).
pub fn result_parts(ty: &Type) -> Option<(&Type, &Type)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(ab) = &last.arguments else {
        return None;
    };
    let types: Vec<&Type> = ab
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match types[..] {
        [ok, err] => Some((ok, err)),
        _ => None,
    }
}

/// One argument after `&self`.
#[derive(Debug, Clone)]
pub struct Arg<'a> {
    /// The argument as written.
    pub original: &'a PatType,
    /// Its name, when the pattern is a plain name (no `mut`, `ref` or sub-pattern).
    pub ident: Option<&'a Ident>,
    /// Its type.
    pub ty: &'a Type,
    /// What it is.
    pub kind: ArgKind<'a>,
}

/// How the request arguments travel: nothing is `()`, one argument is its value, several are a
/// tuple of their values in order.
#[derive(Debug, Clone)]
pub enum Request<'a> {
    /// No request argument: the payload is `()`.
    Unit,
    /// One argument: the payload is its value.
    One(&'a Type),
    /// Several: the payload is the tuple of their values.
    Tuple(Vec<&'a Type>),
}

/// One handler method, read from its trait declaration.
#[derive(Debug, Clone)]
pub struct HandlerDecl<'a> {
    /// The method as written.
    pub original: &'a TraitItemFn,
    /// The method's name.
    pub ident: &'a Ident,
    /// Its `#[grid(...)]` options.
    pub attrs: MethodAttrs,
    /// Every typed argument after `&self`, in order.
    pub args: Vec<Arg<'a>>,
    /// `Result<Ok, Err>`, when the return type has that shape.
    pub ret: Option<(&'a Type, &'a Type)>,
    /// The wire name: [`default_wire_name`](crate::default_wire_name) or `#[grid(name)]`.
    pub wire_name: String,
    /// The handler id: [`handler_id`](crate::handler_id) of the wire name, or `#[grid(id)]`.
    pub id: u32,
}

impl<'a> HandlerDecl<'a> {
    /// Reads method `original` of trait `service`; problems with its `#[grid(...)]` options go
    /// into `errors`.
    pub fn read(
        service: &str,
        original: &'a TraitItemFn,
        errors: &mut Vec<syn::Error>,
    ) -> HandlerDecl<'a> {
        let sig = &original.sig;
        let attrs = MethodAttrs::parse(&original.attrs, errors);
        let args = sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                FnArg::Typed(pt) => Some(Arg {
                    original: pt,
                    ident: plain_name(&pt.pat),
                    ty: &pt.ty,
                    kind: ArgKind::of(&pt.ty),
                }),
                FnArg::Receiver(_) => None,
            })
            .collect();
        let ret = match &sig.output {
            ReturnType::Type(_, ty) => result_parts(ty),
            ReturnType::Default => None,
        };
        let wire_name = attrs.name.as_ref().map_or_else(
            || crate::default_wire_name(service, &sig.ident.to_string()),
            |n| n.value.clone(),
        );
        let id = attrs
            .id
            .as_ref()
            .map_or_else(|| crate::handler_id(&wire_name), |i| i.value);
        HandlerDecl {
            original,
            ident: &sig.ident,
            attrs,
            args,
            ret,
            wire_name,
            id,
        }
    }

    /// The request arguments (neither the context nor a stream end), in order.
    pub fn plain_args(&self) -> impl Iterator<Item = &Arg<'a>> {
        self.args
            .iter()
            .filter(|a| matches!(a.kind, ArgKind::Plain))
    }

    /// How the request travels.
    pub fn request(&self) -> Request<'a> {
        let mut types: Vec<&'a Type> = self.plain_args().map(|a| a.ty).collect();
        match types.len() {
            0 => Request::Unit,
            1 => Request::One(types.remove(0)),
            _ => Request::Tuple(types),
        }
    }

    /// The output item type (`ResponseSender<T>`), if any.
    pub fn sender(&self) -> Option<&'a Type> {
        self.args.iter().find_map(|a| match a.kind {
            ArgKind::Sender(t) => Some(t),
            _ => None,
        })
    }

    /// The input item type (`RequestReceiver<T>`), if any.
    pub fn receiver(&self) -> Option<&'a Type> {
        self.args.iter().find_map(|a| match a.kind {
            ArgKind::Receiver(t) => Some(t),
            _ => None,
        })
    }

    /// True when the method takes a `&Context`.
    pub fn has_context(&self) -> bool {
        self.args.iter().any(|a| matches!(a.kind, ArgKind::Context))
    }

    /// The shape, from the stream ends.
    pub fn shape(&self) -> Shape {
        Shape::from_streams(self.receiver().is_some(), self.sender().is_some())
    }
}

/// The name bound by a plain `name` pattern.
fn plain_name(pat: &Pat) -> Option<&Ident> {
    match pat {
        Pat::Ident(pi) if pi.by_ref.is_none() && pi.mutability.is_none() && pi.subpat.is_none() => {
            Some(&pi.ident)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(src: &str) -> TraitItemFn {
        syn::parse_str(src).expect("a trait method")
    }

    #[test]
    fn arguments_are_told_apart_by_type() {
        let f = method(
            "async fn refresh(&self, ctx: &grid::Context, a: Vec<u8>, b: u32, \
             input: grid::RequestReceiver<Ping>, out: ResponseSender<Pong>) -> Result<(), E>;",
        );
        let mut errors = Vec::new();
        let d = HandlerDecl::read("Locker", &f, &mut errors);
        assert!(errors.is_empty());
        assert_eq!(d.wire_name, "Locker.refresh");
        assert_eq!(d.id, crate::handler_id("Locker.refresh"));
        assert!(d.has_context());
        assert_eq!(d.shape(), Shape::TwoWay);
        assert!(matches!(d.request(), Request::Tuple(ref t) if t.len() == 2));
        assert!(d.ret.is_some());
    }

    #[test]
    fn grid_options_set_the_wire_name_and_id_and_report_mistakes() {
        let f = method(
            r#"#[grid(name = "L.x", id = 0x10, color = 1)] async fn a(&self) -> Result<(), E>;"#,
        );
        let mut errors = Vec::new();
        let d = HandlerDecl::read("Locker", &f, &mut errors);
        assert_eq!(d.wire_name, "L.x");
        assert_eq!(d.id, 16);
        assert!(matches!(d.request(), Request::Unit));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("unknown grid attribute"));
    }
}
