//! Code generation from a validated IR. Nothing here validates: [`expand`] runs the checks first
//! and, on error, emits the trait (without its `#[grid]` attributes) plus every error, so one
//! mistake gives one error and the rest of the crate still sees the trait.
//!
//! Generated for `trait Locker` (visibility of the trait):
//! - the trait itself, its `async fn`s written as `fn … -> impl Future<Output = …> + Send`, so the
//!   server can run handlers on a multi-threaded runtime (implementors still write `async fn`);
//! - `LockerClient`: a handler-spec constant per method (`LockerClient::LOCK`), `new(conn)`,
//!   `connection()`, and one typed method per handler, returning the call as a builder
//!   (`UnaryCall`, `StreamCall`, `DuplexCall`) that `.await` sends, with per-call options;
//! - `LockerServer<S>`: `new(impl)`, `from_arc`, `layer` (tower middleware around its handlers),
//!   `register`, `register_subroute`, `register_at`;
//! - per method, a compile-time check that its payload types implement the serde traits,
//!   reported on the user's type.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, ItemTrait, TraitItem, Type};

use grid_wire::syntax::is_grid_attr as is_grid;

use crate::ast::{ArgKind, Method, Service, Shape};
use crate::attr::ServiceAttrs;
use crate::check;
use crate::ctxt::Ctxt;

/// The macro's whole job: parse, check, then generate or fall back.
pub(crate) fn expand(args: TokenStream, item: &ItemTrait) -> TokenStream {
    let cx = Ctxt::new();
    let attrs = ServiceAttrs::from_args(&cx, args);
    let service = Service::from_syn(&cx, item);
    check::check(&cx, &service);
    match cx.check() {
        Ok(()) => {
            let krate = attrs.krate;
            generate(&service, &quote!(#krate::__private))
        }
        Err(err) => {
            let item = strip_grid_attrs(item);
            let err = err.into_compile_error();
            quote!(#item #err)
        }
    }
}

/// The trait as written, minus our helper attributes, and with argument patterns (already
/// reported) replaced by `_` so the compiler does not report them a second time.
fn strip_grid_attrs(item: &ItemTrait) -> ItemTrait {
    let mut item = item.clone();
    for it in &mut item.items {
        if let TraitItem::Fn(f) = it {
            f.attrs.retain(|a| !is_grid(a));
            for input in &mut f.sig.inputs {
                if let syn::FnArg::Typed(pt) = input {
                    match &mut *pt.pat {
                        syn::Pat::Ident(pi) => {
                            pi.by_ref = None;
                            pi.mutability = None;
                            pi.subpat = None;
                        }
                        other => *other = syn::parse_quote!(_),
                    }
                }
            }
        }
    }
    item
}

fn generate(service: &Service<'_>, p: &TokenStream) -> TokenStream {
    let trait_item = trait_item(service, p);
    let client = client(service, p);
    let server = server(service, p);
    let asserts = service.methods.iter().map(|m| serde_asserts(m, p));
    quote! {
        #trait_item
        #client
        #server
        #(#asserts)*
    }
}

/// The trait, with `async fn` desugared to a `Send` future.
fn trait_item(service: &Service<'_>, p: &TokenStream) -> ItemTrait {
    let mut item = strip_grid_attrs(service.original);
    for it in &mut item.items {
        if let TraitItem::Fn(f) = it {
            f.sig.asyncness = None;
            let ret = match &f.sig.output {
                syn::ReturnType::Type(_, ty) => quote!(#ty),
                syn::ReturnType::Default => quote!(()),
            };
            f.sig.output = syn::parse_quote! {
                -> impl #p::Future<Output = #ret> + #p::Send
            };
        }
    }
    item
}

fn client_ident(service: &Service<'_>) -> Ident {
    format_ident!("{}Client", service.original.ident)
}

fn server_ident(service: &Service<'_>) -> Ident {
    format_ident!("{}Server", service.original.ident)
}

/// `LOCK` for `lock`.
fn const_ident(m: &Method<'_>) -> Ident {
    let name = m.ident.to_string();
    let name = name.trim_start_matches("r#").to_uppercase();
    Ident::new(&name, m.ident.span())
}

fn cfgs<'a>(m: &'a Method<'_>) -> impl Iterator<Item = &'a Attribute> {
    m.original.attrs.iter().filter(|a| a.path().is_ident("cfg"))
}

fn docs<'a>(m: &'a Method<'_>) -> impl Iterator<Item = &'a Attribute> {
    m.original.attrs.iter().filter(|a| a.path().is_ident("doc"))
}

fn opt<T: quote::ToTokens>(p: &TokenStream, v: Option<T>) -> TokenStream {
    match v {
        Some(v) => quote!(#p::Some(#v)),
        None => quote!(#p::None),
    }
}

fn client(service: &Service<'_>, p: &TokenStream) -> TokenStream {
    let vis = &service.original.vis;
    let trait_ident = &service.original.ident;
    let client = client_ident(service);
    let doc = format!(
        "Typed client of [`{trait_ident}`] over one connection (or a subroute of it: pass \
         `conn.subroute(\"…\")`). Generated by `#[grid::handler]`."
    );
    let consts = service.methods.iter().map(|m| {
        let cfgs = cfgs(m);
        let c = const_ident(m);
        let id = m.id;
        let name = &m.wire_name;
        let doc = format!(
            "The handler of [`{trait_ident}::{}`]: wire name `{name}`, id `{id:#010x}`.",
            m.ident
        );
        quote! {
            #(#cfgs)*
            #[doc = #doc]
            pub const #c: #p::HandlerSpec = #p::HandlerSpec {
                id: #p::HandlerId(#id),
                name: #name,
            };
        }
    });
    let all = service.methods.iter().map(|m| {
        let cfgs = cfgs(m);
        let c = const_ident(m);
        quote!(#(#cfgs)* Self::#c,)
    });
    let methods = service.methods.iter().map(|m| client_method(m, p));
    quote! {
        #[doc = #doc]
        #[derive(::std::fmt::Debug, ::std::clone::Clone)]
        #vis struct #client {
            conn: #p::Connection,
        }

        impl #client {
            #(#consts)*

            /// Every handler of the trait.
            pub const HANDLERS: &'static [#p::HandlerSpec] = &[#(#all)*];

            /// A client calling the handlers over `conn` (and its subroute, if it has one).
            pub fn new(conn: #p::Connection) -> Self {
                // Logs, spans, metrics and errors then name these handlers (once per process).
                static NAMED: #p::Once = #p::Once::new();
                NAMED.call_once(|| #p::HandlerSpec::remember(Self::HANDLERS));
                Self { conn }
            }

            /// The connection this client calls over.
            pub fn connection(&self) -> &#p::Connection {
                &self.conn
            }

            #(#methods)*
        }
    }
}

fn client_method(m: &Method<'_>, p: &TokenStream) -> TokenStream {
    let cfgs = cfgs(m);
    let docs = docs(m);
    let ident = m.ident;
    let c = const_ident(m);
    let (ok, err) = m.ret.expect("checked: return type is Result");
    let params = m.plain_args().map(|a| {
        let id = a.ident.expect("checked: plain names");
        let ty = a.ty;
        quote!(#id: #ty)
    });
    let names: Vec<&Ident> = m
        .plain_args()
        .map(|a| a.ident.expect("checked: plain names"))
        .collect();
    let req = match names.as_slice() {
        [] => quote!(&()),
        [one] => quote!(&#one),
        many => quote!(&(#(&#many,)*)),
    };
    let timeout = opt(p, m.attrs.timeout_ms.as_ref().map(|t| t.value));
    let in_cap = opt(p, m.attrs.in_capacity.as_ref().map(|t| t.value));
    let out_cap = opt(p, m.attrs.out_capacity.as_ref().map(|t| t.value));
    let (ret, body) = match m.shape() {
        Shape::Unary => (
            // `use<'_>`: the call borrows the client only, not the arguments (which it has
            // encoded), in every edition.
            quote!(#p::UnaryCall<'_, #ok, #err, impl #p::futures::Future<Output = ::std::result::Result<#p::Bytes, #p::Error>> + ::std::marker::Send + use<'_>>),
            quote! {
                #p::unary_call(
                    &self.conn,
                    Self::#c,
                    #p::encode_request(#req),
                    #p::call_options(#timeout),
                )
            },
        ),
        Shape::ServerStream => {
            let item = m.sender().expect("server stream has a sender");
            (
                quote!(#p::StreamCall<'_, #item, #err>),
                quote! {
                    #p::stream_call(
                        &self.conn,
                        Self::#c,
                        #req,
                        #p::stream_options(false, #in_cap, #out_cap, #timeout),
                    )
                },
            )
        }
        Shape::ClientStream | Shape::TwoWay => {
            let input = m.receiver().expect("has a receiver");
            let item = m.sender().unwrap_or(ok);
            (
                quote!(#p::DuplexCall<'_, #input, #item, #err>),
                quote! {
                    #p::duplex_call(
                        &self.conn,
                        Self::#c,
                        #req,
                        #p::stream_options(true, #in_cap, #out_cap, #timeout),
                    )
                },
            )
        }
    };
    let shape_doc = match m.shape() {
        Shape::Unary => "Calls the handler and waits for its response.",
        Shape::ServerStream => "Opens the stream; its items arrive on the returned stream.",
        Shape::ClientStream => {
            "Opens the stream: send input on the sink, then drop or `finish` it and await \
             `ResponseReceiver::response` for the handler's result."
        }
        Shape::TwoWay => "Opens the stream: send input on the sink, read output from the stream.",
    };
    let docs: Vec<&Attribute> = docs.collect();
    let sep = (!docs.is_empty()).then(|| quote!(#[doc = ""]));
    quote! {
        #(#cfgs)*
        #(#docs)*
        #sep
        #[doc = #shape_doc]
        ///
        /// Returns the call, which `.await` sends as it is; per-call options go before the
        /// `.await`: `.timeout(..)`, `.deadline(..)`, `.wait_for_connect()`, `.metadata(k, v)`,
        /// and on streams the capacities and windows.
        ///
        /// # Errors
        /// Awaited: `CallError::Remote` with the handler's error, or `CallError::Transport` if
        /// the call did not complete.
        pub fn #ident(&self, #(#params),*) -> #ret {
            #body
        }
    }
}

fn server(service: &Service<'_>, p: &TokenStream) -> TokenStream {
    let vis = &service.original.vis;
    let trait_ident = &service.original.ident;
    let client = client_ident(service);
    let server = server_ident(service);
    let doc = format!(
        "Serves an implementation of [`{trait_ident}`]: registers each of its handlers with a \
         manager. Generated by `#[grid::handler]`."
    );
    let name = server.to_string();
    let registrations = service
        .methods
        .iter()
        .map(|m| registration(m, trait_ident, &client, p));
    quote! {
        #[doc = #doc]
        #vis struct #server<S> {
            inner: #p::Arc<S>,
            layer: #p::Option<#p::ServerLayer>,
        }

        impl<S> ::std::fmt::Debug for #server<S> {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(#name)
            }
        }

        impl<S> #server<S>
        where
            S: #trait_ident + #p::Send + #p::Sync + 'static,
        {
            /// A server for `service`.
            pub fn new(service: S) -> Self {
                Self { inner: #p::Arc::new(service), layer: #p::None }
            }

            /// A server for a shared `service`.
            pub fn from_arc(service: #p::Arc<S>) -> Self {
                Self { inner: service, layer: #p::None }
            }

            /// Puts a tower layer around every handler of this service (inside the manager's
            /// own layers): a `Layer` over `grid::layer::HandlerService`, see `grid::layer`.
            /// Called again, the new layer goes outside the ones before.
            pub fn layer(mut self, layer: impl #p::IntoServerLayer) -> Self {
                let new = #p::IntoServerLayer::into_server_layer(layer);
                self.layer = #p::Some(match &self.layer {
                    #p::Some(inner) => new.around(inner),
                    #p::None => new,
                });
                self
            }

            /// Registers every handler with `manager`, without a subroute.
            ///
            /// # Errors
            /// A registration error (duplicate or colliding id), naming both handlers.
            pub fn register(&self, manager: &#p::Manager) -> #p::Result<(), #p::Error> {
                self.register_at(manager, #p::None)
            }

            /// Registers every handler with `manager` under `subroute`.
            ///
            /// # Errors
            /// As [`register`](Self::register), and for an invalid subroute.
            pub fn register_subroute(
                &self,
                manager: &#p::Manager,
                subroute: &str,
            ) -> #p::Result<(), #p::Error> {
                self.register_at(manager, #p::Some(subroute))
            }

            /// Registers every handler with `manager` under `subroute`, or none.
            ///
            /// # Errors
            /// As [`register_subroute`](Self::register_subroute).
            pub fn register_at(
                &self,
                manager: &#p::Manager,
                subroute: #p::Option<&str>,
            ) -> #p::Result<(), #p::Error> {
                #(#registrations)*
                #p::Ok(())
            }
        }
    }
}

fn registration(
    m: &Method<'_>,
    trait_ident: &Ident,
    client: &Ident,
    p: &TokenStream,
) -> TokenStream {
    let cfgs = cfgs(m);
    let ident = m.ident;
    let c = const_ident(m);
    let names: Vec<&Ident> = m
        .plain_args()
        .map(|a| a.ident.expect("checked: plain names"))
        .collect();
    let tys: Vec<&Type> = m.plain_args().map(|a| a.ty).collect();
    let decode = match (names.as_slice(), tys.as_slice()) {
        ([], _) => quote!(),
        ([n], [t]) => quote!(let #n: #t = #p::decode_request(__grid_bytes)?;),
        (ns, ts) => quote!(let (#(#ns,)*): (#(#ts,)*) = #p::decode_request(__grid_bytes)?;),
    };
    let ctx_pat = if m.has_context() {
        quote!(__grid_ctx)
    } else {
        quote!(_)
    };
    let call_args = m.args.iter().map(|a| match a.kind {
        ArgKind::Context => quote!(&__grid_ctx),
        ArgKind::Sender(_) => quote!(__grid_out),
        ArgKind::Receiver(_) => quote!(__grid_in),
        ArgKind::Plain => {
            let n = a.ident.expect("checked: plain names");
            quote!(#n)
        }
    });
    let call = quote!(<S as #trait_ident>::#ident(&*__grid_svc, #(#call_args),*).await);
    let body = match m.shape() {
        Shape::Unary => {
            return quote! {
                #(#cfgs)*
                {
                    let __grid_svc = #p::Clone::clone(&self.inner);
                    manager.register_unary_with(
                        #client::#c,
                        subroute,
                        self.layer.as_ref(),
                        move |#ctx_pat: #p::Context, __grid_bytes: #p::Bytes| {
                            let __grid_svc = #p::Clone::clone(&__grid_svc);
                            async move {
                                #decode
                                #p::encode_result(#call)
                            }
                        },
                    )?;
                }
            };
        }
        Shape::ServerStream => quote! {
            let __grid_out = #p::sender(__grid_output);
            #p::stream_result(#call)
        },
        Shape::TwoWay => quote! {
            let __grid_in = #p::receiver(__grid_input)?;
            let __grid_out = #p::sender(__grid_output);
            #p::stream_result(#call)
        },
        Shape::ClientStream => quote! {
            let __grid_in = #p::receiver(__grid_input)?;
            let mut __grid_out = #p::sender(__grid_output);
            let __grid_result = #call;
            #p::send_response(&mut __grid_out, __grid_result).await
        },
    };
    let input_pat = if m.receiver().is_some() {
        quote!(__grid_input)
    } else {
        quote!(_)
    };
    quote! {
        #(#cfgs)*
        {
            let __grid_svc = #p::Clone::clone(&self.inner);
            manager.register_stream_with(
                #client::#c,
                subroute,
                self.layer.as_ref(),
                move |#ctx_pat: #p::Context,
                      __grid_bytes: #p::Bytes,
                      #input_pat: #p::Option<#p::RawRequestReceiver>,
                      __grid_output: #p::RawResponseSender| {
                    let __grid_svc = #p::Clone::clone(&__grid_svc);
                    async move {
                        #decode
                        #body
                    }
                },
            )?;
        }
    }
}

/// Per method: each payload type must implement the serde traits; the error points at the type.
fn serde_asserts(m: &Method<'_>, p: &TokenStream) -> TokenStream {
    let cfgs = cfgs(m);
    let mut types: Vec<&Type> = m.plain_args().map(|a| a.ty).collect();
    types.extend(m.sender());
    types.extend(m.receiver());
    if let Some((ok, err)) = m.ret {
        types.push(ok);
        types.push(err);
    }
    let asserts = types.iter().map(|ty| {
        let span = ty.span();
        quote_spanned!(span=> #p::assert_serde::<#ty>();)
    });
    quote! {
        #(#cfgs)*
        const _: () = {
            #(#asserts)*
        };
    }
}
