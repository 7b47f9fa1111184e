//! Cross-cutting rules on a parsed trait. Each rule is one function; all report into the
//! [`Ctxt`], and [`check`] runs them all.

use std::collections::HashMap;

use crate::ast::{ArgKind, Method, Service, Shape};
use crate::ctxt::Ctxt;

/// Names the generated client and server define themselves.
const RESERVED: &[&str] = &[
    "new",
    "connection",
    "from_arc",
    "register",
    "register_subroute",
    "register_at",
    "into_inner",
];

/// Runs every rule.
pub(crate) fn check(cx: &Ctxt, service: &Service<'_>) {
    check_trait_generics(cx, service);
    for m in &service.methods {
        check_argument_order(cx, m);
        check_stream_return(cx, m);
        check_reserved_name(cx, m);
        check_options_fit_shape(cx, m);
    }
    check_duplicate_ids(cx, service);
}

/// The trait cannot be generic: a handler has one wire type.
fn check_trait_generics(cx: &Ctxt, service: &Service<'_>) {
    let g = &service.original.generics;
    if !g.params.is_empty() || g.where_clause.is_some() {
        cx.error_spanned_by(
            g,
            "a #[grid::handler] trait cannot be generic: every handler has one wire type; use concrete types",
        );
    }
}

/// Arguments come in order: an optional `&Context` first, the request, then an optional
/// `RequestReceiver`, then an optional `ResponseSender` last; each stream end at most once.
fn check_argument_order(cx: &Ctxt, m: &Method<'_>) {
    let n = m.args.len();
    let total_senders = m
        .args
        .iter()
        .filter(|a| matches!(a.kind, ArgKind::Sender(_)))
        .count();
    let mut senders = 0;
    let mut receivers = 0;
    let mut contexts = 0;
    for (i, a) in m.args.iter().enumerate() {
        match a.kind {
            ArgKind::Context => {
                contexts += 1;
                if contexts > 1 {
                    cx.error_spanned_by(
                        a.original,
                        "only one `&grid::Context` argument is allowed",
                    );
                } else if i != 0 {
                    cx.error_spanned_by(
                        a.original,
                        "`&grid::Context` must be the first argument after `&self`",
                    );
                }
            }
            ArgKind::Sender(_) => {
                senders += 1;
                if senders > 1 {
                    cx.error_spanned_by(
                        a.original,
                        "only one `grid::ResponseSender` argument is allowed: a handler has one output stream",
                    );
                } else if i + 1 != n && total_senders == 1 {
                    cx.error_spanned_by(
                        a.original,
                        "`grid::ResponseSender<T>` must be the last argument",
                    );
                }
            }
            ArgKind::Receiver(_) => {
                receivers += 1;
                let later_plain = m.args[i + 1..]
                    .iter()
                    .any(|b| matches!(b.kind, ArgKind::Plain | ArgKind::Context));
                if receivers > 1 {
                    cx.error_spanned_by(
                        a.original,
                        "only one `grid::RequestReceiver` argument is allowed: a handler has one input stream",
                    );
                } else if later_plain {
                    cx.error_spanned_by(
                        a.original,
                        "`grid::RequestReceiver<T>` must come after the request arguments (and before a `grid::ResponseSender`)",
                    );
                }
            }
            ArgKind::Plain => {}
        }
    }
}

/// A handler with a `ResponseSender` reports success as `Ok(())`: its items are its output.
fn check_stream_return(cx: &Ctxt, m: &Method<'_>) {
    let Some((ok, _)) = m.ret else { return };
    if matches!(m.shape(), Shape::ServerStream | Shape::TwoWay) && !is_unit(ok) {
        cx.error_spanned_by(
            ok,
            "a handler with a `grid::ResponseSender` returns `Result<(), E>`: send its output through the sender",
        );
    }
}

/// A method cannot share a name with a generated method.
fn check_reserved_name(cx: &Ctxt, m: &Method<'_>) {
    let name = m.ident.to_string();
    if RESERVED.contains(&name.as_str()) {
        cx.error_spanned_by(
            m.ident,
            format!(
                "method name `{name}` conflicts with a generated method of the client or server: \
                 rename it and keep the wire name with #[grid(name = \"...\")]"
            ),
        );
    }
}

/// Stream capacities only make sense on the matching stream ends.
fn check_options_fit_shape(cx: &Ctxt, m: &Method<'_>) {
    if let Some(c) = &m.attrs.in_capacity {
        if m.receiver().is_none() {
            cx.syn_error(syn::Error::new(
                c.span,
                "`in_capacity` needs a `grid::RequestReceiver<T>` argument",
            ));
        }
    }
    if let Some(c) = &m.attrs.out_capacity {
        if m.shape() == Shape::Unary {
            cx.syn_error(syn::Error::new(
                c.span,
                "`out_capacity` is for streams: a unary handler has no output stream",
            ));
        }
    }
}

/// Ids and wire names are unique inside a trait.
fn check_duplicate_ids(cx: &Ctxt, service: &Service<'_>) {
    let mut ids: HashMap<u32, &Method<'_>> = HashMap::new();
    let mut names: HashMap<&str, &Method<'_>> = HashMap::new();
    for m in &service.methods {
        if let Some(prev) = names.insert(&m.wire_name, m) {
            let span = m.attrs.name.as_ref().map_or(m.ident.span(), |n| n.span);
            cx.syn_error(syn::Error::new(
                span,
                format!(
                    "wire name \"{}\" is already used by `{}`: give one of them another #[grid(name = \"...\")]",
                    m.wire_name, prev.ident
                ),
            ));
            continue;
        }
        if let Some(prev) = ids.insert(m.id, m) {
            let span = m.attrs.id.as_ref().map_or(m.ident.span(), |i| i.span);
            cx.syn_error(syn::Error::new(
                span,
                format!(
                    "handler id {} is already used by `{}`: give one of them another #[grid(id = ...)]",
                    m.id, prev.ident
                ),
            ));
        }
    }
}

fn is_unit(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Tuple(t) if t.elems.is_empty())
}
