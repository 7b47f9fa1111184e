//! The IR: a trait parsed into one [`Method`] per handler. Every node keeps the original syntax so
//! later checks can point at the user's tokens. Problems found while reading a method's shape are
//! reported into the [`Ctxt`]; the IR is still built as far as it can be.

use syn::{
    FnArg, GenericArgument, Ident, ItemTrait, Pat, PathArguments, ReturnType, TraitItem,
    TraitItemFn, Type,
};

use crate::attr::MethodAttrs;
use crate::ctxt::Ctxt;
use crate::ids;

/// A `#[grid::handler]` trait.
pub(crate) struct Service<'a> {
    pub(crate) original: &'a ItemTrait,
    pub(crate) methods: Vec<Method<'a>>,
}

/// One handler method.
pub(crate) struct Method<'a> {
    pub(crate) original: &'a TraitItemFn,
    pub(crate) ident: &'a Ident,
    pub(crate) attrs: MethodAttrs,
    pub(crate) args: Vec<Arg<'a>>,
    /// `Result<Ok, Err>`, when the return type has that shape.
    pub(crate) ret: Option<(&'a Type, &'a Type)>,
    /// The wire name: `Service.method` or `#[grid(name)]`.
    pub(crate) wire_name: String,
    /// The handler id: from the wire name or `#[grid(id)]`.
    pub(crate) id: u32,
}

/// One argument after `&self`.
pub(crate) struct Arg<'a> {
    pub(crate) original: &'a syn::PatType,
    pub(crate) ident: Option<&'a Ident>,
    pub(crate) ty: &'a Type,
    pub(crate) kind: ArgKind<'a>,
}

/// What an argument is, told apart by its type.
pub(crate) enum ArgKind<'a> {
    /// `&grid::Context`.
    Context,
    /// `grid::Sender<T>`: the handler's output items.
    Sender(&'a Type),
    /// `grid::Receiver<T>`: the caller's input items.
    Receiver(&'a Type),
    /// A part of the request.
    Plain,
}

/// The shape of a handler.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Unary,
    ServerStream,
    ClientStream,
    TwoWay,
}

impl<'a> Method<'a> {
    /// The request arguments (neither context nor stream ends).
    pub(crate) fn plain_args(&self) -> impl Iterator<Item = &Arg<'a>> {
        self.args
            .iter()
            .filter(|a| matches!(a.kind, ArgKind::Plain))
    }

    pub(crate) fn sender(&self) -> Option<&'a Type> {
        self.args.iter().find_map(|a| match a.kind {
            ArgKind::Sender(t) => Some(t),
            _ => None,
        })
    }

    pub(crate) fn receiver(&self) -> Option<&'a Type> {
        self.args.iter().find_map(|a| match a.kind {
            ArgKind::Receiver(t) => Some(t),
            _ => None,
        })
    }

    pub(crate) fn has_context(&self) -> bool {
        self.args.iter().any(|a| matches!(a.kind, ArgKind::Context))
    }

    pub(crate) fn shape(&self) -> Shape {
        match (self.receiver().is_some(), self.sender().is_some()) {
            (false, false) => Shape::Unary,
            (false, true) => Shape::ServerStream,
            (true, false) => Shape::ClientStream,
            (true, true) => Shape::TwoWay,
        }
    }
}

impl<'a> Service<'a> {
    /// Reads a trait into the IR, reporting what does not fit into `cx`.
    pub(crate) fn from_syn(cx: &Ctxt, original: &'a ItemTrait) -> Service<'a> {
        let service = original.ident.to_string();
        let mut methods = Vec::new();
        for item in &original.items {
            match item {
                TraitItem::Fn(f) => methods.push(Method::from_syn(cx, &service, f)),
                TraitItem::Const(c) => cx.error_spanned_by(
                    c,
                    "a #[grid::handler] trait can only hold async methods: move this constant out of the trait",
                ),
                TraitItem::Type(t) => cx.error_spanned_by(
                    t,
                    "a #[grid::handler] trait can only hold async methods: remove this associated type",
                ),
                other => cx.error_spanned_by(
                    other,
                    "a #[grid::handler] trait can only hold async methods",
                ),
            }
        }
        Service { original, methods }
    }
}

impl<'a> Method<'a> {
    fn from_syn(cx: &Ctxt, service: &str, original: &'a TraitItemFn) -> Method<'a> {
        let sig = &original.sig;
        let attrs = MethodAttrs::from_attrs(cx, &original.attrs);
        let mut args = Vec::new();
        let mut saw_self = false;
        for (i, input) in sig.inputs.iter().enumerate() {
            match input {
                FnArg::Receiver(r) if i == 0 => {
                    saw_self = true;
                    if r.reference.is_none() {
                        cx.error_spanned_by(
                            r,
                            "handler methods take `&self`, not `self` by value: the server shares one value between calls",
                        );
                    } else if r.mutability.is_some() {
                        cx.error_spanned_by(
                            r,
                            "handler methods take `&self`, not `&mut self`: calls run concurrently; use interior mutability (a Mutex) for state",
                        );
                    } else if r.colon_token.is_some() {
                        cx.error_spanned_by(r, "handler methods take plain `&self`");
                    }
                }
                FnArg::Receiver(r) => cx.error_spanned_by(r, "`self` must be the first argument"),
                FnArg::Typed(pt) => {
                    let ident = match &*pt.pat {
                        Pat::Ident(pi)
                            if pi.by_ref.is_none()
                                && pi.mutability.is_none()
                                && pi.subpat.is_none() =>
                        {
                            Some(&pi.ident)
                        }
                        Pat::Ident(pi) if pi.subpat.is_none() => {
                            cx.error_spanned_by(
                                &pt.pat,
                                "write a plain name in the trait: `mut` and `ref` belong in the impl's signature",
                            );
                            None
                        }
                        _ => {
                            cx.error_spanned_by(
                                &pt.pat,
                                "patterns aren't allowed in handler arguments: use a plain name and destructure in the body",
                            );
                            None
                        }
                    };
                    args.push(Arg {
                        original: pt,
                        ident,
                        ty: &pt.ty,
                        kind: classify(&pt.ty),
                    });
                }
            }
        }
        if !saw_self {
            cx.error_spanned_by(
                &sig.ident,
                "handler methods take `&self` as their first argument: add `&self`",
            );
        }
        if sig.asyncness.is_none() {
            cx.error_spanned_by(
                sig.fn_token,
                "handler methods must be `async fn`: write `async fn`",
            );
        }
        if let Some(c) = &sig.constness {
            cx.error_spanned_by(c, "handler methods cannot be `const`");
        }
        if let Some(u) = &sig.unsafety {
            cx.error_spanned_by(u, "handler methods cannot be `unsafe`");
        }
        if let Some(a) = &sig.abi {
            cx.error_spanned_by(a, "handler methods cannot have an ABI");
        }
        if let Some(v) = &sig.variadic {
            cx.error_spanned_by(v, "handler methods cannot be variadic");
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            cx.error_spanned_by(
                &sig.generics,
                "handler methods cannot be generic: every handler has one wire type; use concrete types",
            );
        }
        if let Some(body) = &original.default {
            cx.syn_error(syn::Error::new(
                body.brace_token.span.join(),
                "handler methods cannot have a default body: implement them in the `impl`",
            ));
        }
        let ret = match &sig.output {
            ReturnType::Type(_, ty) => result_parts(ty),
            ReturnType::Default => None,
        };
        if ret.is_none() {
            match &sig.output {
                ReturnType::Type(_, ty) => cx.error_spanned_by(
                    ty,
                    "handler methods return `Result<T, E>`: the error type E reaches the caller",
                ),
                ReturnType::Default => cx.error_spanned_by(
                    &sig.ident,
                    "handler methods return `Result<T, E>`: add a return type, e.g. `-> Result<(), MyError>`",
                ),
            }
        }
        let wire_name = attrs
            .name
            .as_ref()
            .map_or_else(|| format!("{service}.{}", sig.ident), |n| n.value.clone());
        let id = attrs
            .id
            .as_ref()
            .map_or_else(|| ids::from_wire_name(&wire_name), |i| i.value);
        Method {
            original,
            ident: &sig.ident,
            attrs,
            args,
            ret,
            wire_name,
            id,
        }
    }
}

/// The argument's kind, by its type.
fn classify(ty: &Type) -> ArgKind<'_> {
    if let Type::Reference(r) = ty {
        if let Type::Path(p) = &*r.elem {
            if p.qself.is_none() && p.path.segments.last().is_some_and(|s| s.ident == "Context") {
                return ArgKind::Context;
            }
        }
    }
    if let Some((name, inner)) = single_generic(ty) {
        if name == "Sender" {
            return ArgKind::Sender(inner);
        }
        if name == "Receiver" {
            return ArgKind::Receiver(inner);
        }
    }
    ArgKind::Plain
}

/// `Name<T>` as (`Name`, `T`), for a path type whose last segment has one type argument.
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

/// `Result<T, E>` as (`T`, `E`).
fn result_parts(ty: &Type) -> Option<(&Type, &Type)> {
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
