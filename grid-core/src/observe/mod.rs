//! Observability: a tracing span per call on each side and per connection, metrics through the
//! `metrics` facade, and the book of handler names that both (and every message) print.
//!
//! Spans (targets under `grid::`, so `RUST_LOG=grid=debug` shows them):
//!
//! - `conn` (info, target `grid::conn`) around every task of one socket, with `node`, `peer`
//!   and `conn` (the session's short id, as in its log lines); served calls nest under it;
//! - `call` / `open` (debug, target `grid::call`) around [`Connection::call`] and
//!   [`Connection::open_stream`] (for a stream, its opening), in the caller's own span;
//! - `serve` (debug, target `grid::serve`) around a handler's task, unary or stream, to its
//!   last frame.
//!
//! With the `otel` feature, an enabled call span's OpenTelemetry context goes out in the call's
//! metadata (`traceparent`, `tracestate`: whatever the application's global propagator writes),
//! and the `serve` span takes what it extracts as its parent (see `otel`).
//!
//! Each call span has `handler` (the wire name), `peer`, `subroute`, `mux`, and, when it ends,
//! `outcome` (one word: `ok`, `application`, `deadline`, `dropped`, … see [`Outcome`]) and
//! `duration_us`.
//!
//! Cost: when no subscriber's level hint reaches debug and no recorder is installed, a call
//! checks that and does nothing more here (no span, no lookup, no clock). Otherwise a span at a
//! level no subscriber wants is a disabled span (tracing's per-callsite interest, cached), never
//! entered, its fields neither formatted nor recorded; the clock is read only for a span that is
//! enabled or for the duration histogram. The metrics handles are registered once per
//! connection and handler (see `meters`).
//!
//! [`Connection::call`]: crate::Connection::call
//! [`Connection::open_stream`]: crate::Connection::open_stream

#[cfg_attr(not(feature = "metrics"), path = "meters_disabled.rs")]
mod meters;
pub(crate) mod names;
#[cfg_attr(not(feature = "otel"), path = "otel_disabled.rs")]
mod otel;
mod outcome;

use std::future::Future;
use std::time::Instant;

use futures::future::Either;
use tracing::instrument::Instrumented;

use tracing::field::{display, Empty};
use tracing::{Instrument, Level, Span};

use crate::conn::session::Session;
use crate::conn::stats::ConnStats;
use crate::error::Error;
use crate::frame::{ErrorRecord, Route};
use crate::ids::{HandlerId, MuxId};
use crate::mux::CancelCause;

use meters::HandlerRef;
pub(crate) use meters::{ConnMetrics, Counted};
pub(crate) use outcome::Outcome;

/// Which end of a call: the side that started it, or the side that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client = 0,
    Server = 1,
}

impl Side {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// The span of one socket's tasks.
pub(crate) fn conn_span(session: &Session) -> Span {
    tracing::info_span!(
        target: "grid::conn",
        "conn",
        node = %session.stats.node,
        peer = %session.peer,
        conn = %format_args!("{:08x}", session.id),
    )
}

/// Awaits a call's future in its span, or as it is when the span is disabled: a disabled
/// span's enter and exit still cost a few checks on every poll (more with tracing's `log`
/// feature), and a wrapper would cost a copy of the future. A macro, so the future is built
/// where it is awaited.
macro_rules! call_within {
    ($call:expr, $fut:expr) => {
        if $call.span_enabled() {
            tracing::Instrument::instrument($fut, $call.span()).await
        } else {
            $fut.await
        }
    };
}
pub(crate) use call_within;

/// Spawns a served call's task in its span (entered only when enabled, as [`call_within`]).
#[inline(always)]
pub(crate) fn spawn_within<F>(span: Span, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if span.is_disabled() {
        tokio::spawn(task);
    } else {
        tokio::spawn(task.instrument(span));
    }
}

/// Runs a connection task in its span, or as it is when the span is disabled (no subscriber
/// wants connection spans: then a poll does not enter and exit it).
pub(crate) fn in_span<F: Future>(span: &Span, task: F) -> Either<F, Instrumented<F>> {
    if span.is_disabled() {
        Either::Left(task)
    } else {
        Either::Right(task.instrument(span.clone()))
    }
}

/// Records the mux id on the current call span, once the call has one.
pub(crate) fn record_mux(mux: MuxId) {
    if tracing::level_enabled!(Level::DEBUG) {
        Span::current().record("mux", mux.0);
    }
}

fn subroute_field(subroute: Option<&[u8]>) -> Option<tracing::field::DisplayValue<String>> {
    subroute.map(|s| display(String::from_utf8_lossy(s).into_owned()))
}

/// What a call leaves when it ends: its span's last fields and its metrics.
struct Ending {
    span: Span,
    started: Option<Instant>,
    meters: HandlerRef,
    side: Side,
    /// Whether the duration goes into the histogram (not a stream's opening).
    histogram: bool,
}

impl Ending {
    fn new(stats: &ConnStats, span: Span, handler: HandlerId, side: Side, histogram: bool) -> Self {
        let started = (stats.metrics.timed() || !span.is_disabled()).then(Instant::now);
        let meters = stats.metrics.handler(handler, side);
        if let Some(m) = stats.metrics.at(&meters) {
            m.started();
        }
        stats.metrics.in_flight(side).increment(1.0);
        Ending {
            span,
            started,
            meters,
            side,
            histogram,
        }
    }

    fn end(&self, stats: &ConnStats, outcome: Outcome) {
        let took = self.started.map(|t| t.elapsed());
        stats.metrics.in_flight(self.side).decrement(1.0);
        if let Some(m) = stats.metrics.at(&self.meters) {
            m.ended(outcome, took.filter(|_| self.histogram));
        }
        if !self.span.is_disabled() {
            self.span.record("outcome", display(outcome.as_str()));
            if let Some(t) = took {
                self.span.record(
                    "duration_us",
                    u64::try_from(t.as_micros()).unwrap_or(u64::MAX),
                );
            }
        }
    }
}

/// Whether anything can want a call's span or metrics: a subscriber's level hint reaches the
/// call spans' level, or a recorder was installed. When neither, a call does nothing here but
/// this check.
fn watched(stats: &ConnStats) -> bool {
    stats.metrics.timed() || tracing::level_enabled!(Level::DEBUG)
}

/// A call this side makes, from its start to its result (or to its future's drop, which ends
/// it as `dropped`).
pub(crate) struct Call<'a> {
    stats: &'a ConnStats,
    /// `None` when nothing watches; boxed, so an unwatched call's future stays as small as it
    /// was without it.
    ending: Option<Box<Ending>>,
    done: bool,
}

impl<'a> Call<'a> {
    /// A unary call (`stream: false`) or a stream's opening.
    pub(crate) fn start(
        stats: &'a ConnStats,
        peer: &str,
        handler: HandlerId,
        subroute: Option<&[u8]>,
        stream: bool,
    ) -> Call<'a> {
        if !watched(stats) {
            return Call {
                stats,
                ending: None,
                done: true,
            };
        }
        let span = if stream {
            tracing::debug_span!(
                target: "grid::call", "open",
                handler = %handler, node = %stats.node, peer = %peer, subroute = subroute_field(subroute),
                mux = Empty, outcome = Empty, duration_us = Empty,
            )
        } else {
            tracing::debug_span!(
                target: "grid::call", "call",
                handler = %handler, node = %stats.node, peer = %peer, subroute = subroute_field(subroute),
                mux = Empty, outcome = Empty, duration_us = Empty,
            )
        };
        Call {
            ending: Some(Box::new(Ending::new(
                stats,
                span,
                handler,
                Side::Client,
                !stream,
            ))),
            stats,
            done: false,
        }
    }

    /// The span to run the call in.
    pub(crate) fn span(&self) -> Span {
        self.ending
            .as_ref()
            .map_or_else(Span::none, |e| e.span.clone())
    }

    /// Whether a subscriber wants the span.
    pub(crate) fn span_enabled(&self) -> bool {
        self.ending.as_ref().is_some_and(|e| !e.span.is_disabled())
    }

    /// Adds the span's trace context to the call's metadata (feature `otel`; nothing
    /// otherwise, or when the span is disabled), if the metadata still `fits` with it: a peer
    /// that takes no metadata (or no more) gets the call without it, never a refusal.
    pub(crate) fn propagate(
        &self,
        metadata: &mut crate::frame::Metadata,
        fits: impl FnOnce(&crate::frame::Metadata) -> bool,
    ) {
        if let Some(e) = self.ending.as_ref().filter(|e| !e.span.is_disabled()) {
            otel::inject(&e.span, metadata, fits);
        }
    }

    /// Ends the call with its result, and hands the result back.
    pub(crate) fn end<T>(mut self, result: Result<T, Error>) -> Result<T, Error> {
        self.done = true;
        if let Some(ending) = &self.ending {
            let outcome = match &result {
                Ok(_) => Outcome::Ok,
                Err(e) => Outcome::of_error(e),
            };
            ending.end(self.stats, outcome);
        }
        result
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if let (false, Some(ending)) = (self.done, &self.ending) {
            ending.end(self.stats, Outcome::Dropped);
        }
    }
}

/// A call this side serves, from its admission to the end of its task: kept in the task's slot
/// guard, which [`end`](Self::end)s it with the connection's stats when it drops.
pub(crate) struct Serve {
    /// `None` when nothing watches; boxed, since a served stream's task (most of an idle
    /// stream's memory) holds it for the stream's life.
    ending: Option<Box<Ending>>,
    outcome: Option<Outcome>,
}

impl Serve {
    /// A served call of `route` on `mux` (`stream`: a stream handler).
    pub(crate) fn start(session: &Session, route: &Route, mux: MuxId, stream: bool) -> Serve {
        if !watched(&session.stats) {
            return Serve {
                ending: None,
                outcome: None,
            };
        }
        let subroute = route.subroute.as_deref();
        let span = tracing::debug_span!(
            target: "grid::serve", "serve",
            handler = %route.handler, peer = %session.peer, subroute = subroute_field(subroute),
            mux = mux.0, stream, outcome = Empty, duration_us = Empty,
        );
        Serve {
            ending: Some(Box::new(Ending::new(
                &session.stats,
                span,
                route.handler,
                Side::Server,
                true,
            ))),
            outcome: None,
        }
    }

    /// The span to run the task in.
    pub(crate) fn span(&self) -> Span {
        self.ending
            .as_ref()
            .map_or_else(Span::none, |e| e.span.clone())
    }

    /// Takes the trace context the caller sent in `metadata` as the span's parent (feature
    /// `otel`; nothing otherwise, or when the span is disabled).
    pub(crate) fn adopt(&self, metadata: &crate::frame::Metadata) {
        if let Some(e) = self.ending.as_ref().filter(|e| !e.span.is_disabled()) {
            otel::adopt(&e.span, metadata);
        }
    }

    /// The call was cancelled for `cause`.
    pub(crate) fn cancelled(&mut self, cause: CancelCause) {
        self.outcome.get_or_insert(Outcome::of_cause(cause));
    }

    /// The handler returned (or panicked: the record says so). A handler that returned after
    /// its call was cancelled (it saw the cancellation) ends as the cancellation: its result
    /// goes nowhere.
    pub(crate) fn returned<T>(
        &mut self,
        result: &Result<T, ErrorRecord>,
        cancelled: Option<CancelCause>,
    ) {
        self.outcome.get_or_insert(match (cancelled, result) {
            (Some(cause), _) => Outcome::of_cause(cause),
            (None, Ok(_)) => Outcome::Ok,
            (None, Err(rec)) => Outcome::of_code(rec.code),
        });
    }

    /// The task is over (`dropped` if nothing said how).
    pub(crate) fn end(&self, stats: &ConnStats) {
        if let Some(ending) = &self.ending {
            ending.end(stats, self.outcome.unwrap_or(Outcome::Dropped));
        }
    }
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}
