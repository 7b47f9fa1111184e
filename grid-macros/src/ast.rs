//! The IR: a trait parsed into one [`Method`] per handler. Every node keeps the original syntax so
//! later checks can point at the user's tokens. Problems found while reading a method are
//! reported into the [`Ctxt`]; the IR is still built as far as it can be.
//!
//! How a method reads — which argument is the context, a stream end or part of the request, its
//! wire name, id, shape and `#[grid(...)]` options — is not decided here but by
//! `grid_wire::syntax`, which grid-build uses too: [`Method`] is its `HandlerDecl`. This module
//! adds the checks only the macro makes (receiver, `async`, patterns, return type).

use syn::{FnArg, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn};

pub(crate) use grid_wire::syntax::{ArgKind, HandlerDecl as Method};
pub(crate) use grid_wire::Shape;

use crate::ctxt::Ctxt;

/// A `#[grid::handler]` trait.
pub(crate) struct Service<'a> {
    pub(crate) original: &'a ItemTrait,
    pub(crate) methods: Vec<Method<'a>>,
}

impl<'a> Service<'a> {
    /// Reads a trait into the IR, reporting what does not fit into `cx`.
    pub(crate) fn from_syn(cx: &Ctxt, original: &'a ItemTrait) -> Service<'a> {
        let service = original.ident.to_string();
        let mut methods = Vec::new();
        for item in &original.items {
            match item {
                TraitItem::Fn(f) => methods.push(read_method(cx, &service, f)),
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

/// Reads one method with the shared rules, then checks what only the macro cares about, in
/// the order of the tokens (so errors read top to bottom).
fn read_method<'a>(cx: &Ctxt, service: &str, original: &'a TraitItemFn) -> Method<'a> {
    let mut errors = Vec::new();
    let method = Method::read(service, original, &mut errors);
    for e in errors {
        cx.syn_error(e);
    }
    let sig = &original.sig;
    let mut saw_self = false;
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) if i == 0 => {
                saw_self = true;
                check_receiver(cx, r);
            }
            FnArg::Receiver(r) => cx.error_spanned_by(r, "`self` must be the first argument"),
            FnArg::Typed(pt) => check_pattern(cx, &pt.pat),
        }
    }
    if !saw_self {
        cx.error_spanned_by(
            &sig.ident,
            "handler methods take `&self` as their first argument: add `&self`",
        );
    }
    check_signature(cx, original);
    if method.ret.is_none() {
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
    method
}

/// The first argument is plain `&self`.
fn check_receiver(cx: &Ctxt, r: &syn::Receiver) {
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

/// An argument is a plain name (the shared reader leaves `Arg::ident` empty otherwise).
fn check_pattern(cx: &Ctxt, pat: &Pat) {
    match pat {
        Pat::Ident(pi) if pi.by_ref.is_none() && pi.mutability.is_none() && pi.subpat.is_none() => {}
        Pat::Ident(pi) if pi.subpat.is_none() => cx.error_spanned_by(
            pat,
            "write a plain name in the trait: `mut` and `ref` belong in the impl's signature",
        ),
        _ => cx.error_spanned_by(
            pat,
            "patterns aren't allowed in handler arguments: use a plain name and destructure in the body",
        ),
    }
}

/// `async fn`, nothing else on the signature, no default body.
fn check_signature(cx: &Ctxt, original: &TraitItemFn) {
    let sig = &original.sig;
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
}
