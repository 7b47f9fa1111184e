//! The connection handshake: sans-IO state machines that authenticate both ends of a new
//! connection before any call crosses it.
//!
//! Right after the WebSocket upgrade, the side that dialed (the *dialer*) and the side that
//! accepted (the *acceptor*) exchange four handshake frames on mux 0 (`PROTOCOL.md`, section 7):
//!
//! ```text
//!  dialer                                                                acceptor
//!    │ Hello {version, from, to, instance, time_ms, nonce_d, checksum, max_payload}
//!    │ ────────────────────────────────────────────────────────────────────▶ │ version? to == me?
//!    │                                                                       │ from a member? right
//!    │                                                                       │ direction? clock skew?
//!    │ Welcome {body: {version, from, instance, time_ms, nonce_a, checksum, max_payload},
//!    │          proof: prove("grid/1 welcome\0", hello, body)}
//!    │ ◀──────────────────────────────────────────────────────────────────── │
//!    │ proof ok? (mutual auth) from == the node I dialed? version? skew?     │
//!    │ Confirm {body: {}, proof: prove("grid/1 confirm\0", hello, welcome, body)}
//!    │ ────────────────────────────────────────────────────────────────────▶ │ proof ok?
//!    │ Ready {}                                                              │
//!    │ ◀──────────────────────────────────────────────────────────────────── │ live: may call
//!    │ live: may call
//!
//!  Any step may instead answer Reject {code, reason}, after which both sides close.
//! ```
//!
//! **Authentication is mutual.** The acceptor proves itself first, in `Welcome`: the dialer is
//! about to send that node its calls, so it checks that it reached a real member. Each proof
//! covers a transcript holding the other side's fresh nonce, so a proof captured on one connection
//! is useless on any other: replaying a `Confirm` fails against a new acceptor nonce, replaying a
//! `Welcome` fails against a new dialer nonce. The transcripts contain the exact bytes received,
//! never a re-encoding, so a newer peer can add record fields without breaking an older peer's
//! proof check. The shared secret itself never crosses the wire (see [`HmacAuth`](crate::HmacAuth)).
//!
//! **What it does not do:** it authenticates the two ends, not the frames that follow. On a link
//! without TLS, an attacker who can rewrite traffic can still take over a connection after the
//! handshake; use `https://` names (TLS) where that matters.
//!
//! # Sans-IO
//!
//! No socket, no task, no clock: each step takes the received [`Frame`](crate::frame::Frame) and the wall-clock time
//! (`now_ms`, unix milliseconds) and returns the frame to send next, or a [`Rejection`] holding the
//! error and the `Reject` frame to send before closing. Randomness comes in as arguments too
//! ([`random_nonce`], [`random_instance`]), so tests are deterministic. The driver owns the
//! [timeout](DEFAULT_HANDSHAKE_TIMEOUT) and sends every handshake frame alone in its batch.
//!
//! ```text
//!  dialer:   DialerHandshake::start ──Hello──▶ DialerHandshake
//!              .on_welcome(Welcome) ──Confirm─▶ DialerAwaitReady .on_ready(Ready) ─▶ PeerInfo
//!  acceptor: AcceptorHandshake::new
//!              .on_hello(Hello)     ──Welcome─▶ AcceptorAwaitConfirm
//!              .on_confirm(Confirm) ──Ready───▶ PeerInfo
//! ```
//!
//! Each state is consumed by its step, so a finished or failed handshake cannot be driven again.
//!
//! **Handler tables.** Each side may announce the handlers it serves ([`DialerHandshake::announce`],
//! [`AcceptorHandshake::announce`]): the dialer's table travels in its `Confirm` body (under its
//! proof), the acceptor's in its `Ready`, so neither reaches a peer that has not proved itself.
//! The peer's table comes back in [`PeerInfo::handlers`]; an older peer sends none and ignores
//! ours (`PROTOCOL.md` sections 7.9 and 9).

mod acceptor;
mod dialer;
mod direction;
mod error;
mod records;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use acceptor::{AcceptorAwaitConfirm, AcceptorHandshake, AcceptorParams};
pub use dialer::{DialerAwaitReady, DialerHandshake, DialerParams};
pub use direction::{dialer_of, should_dial};
pub use error::{HandshakeError, Rejection};
pub use records::{reject_frame, RejectCode};

use crate::frame::{Limits, BATCH_HEADER_LEN, CHECKSUM_LEN, FRAME_HEADER_LEN};
use crate::table::HandlerTable;

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;

/// Bytes of a process instance id.
pub const INSTANCE_LEN: usize = 16;

/// Fresh random bytes a side contributes to one handshake; the other side's proof must cover it.
pub type Nonce = [u8; NONCE_LEN];

/// Random bytes drawn once per process (per manager), so a peer can tell a restart from a
/// reconnect.
pub type InstanceId = [u8; INSTANCE_LEN];

/// Largest encoded handshake record (one frame's payload). The handshake runs before the peer is
/// authenticated, so anyone who can reach the port can send one: the bound stops an unauthenticated
/// client from making us buffer and parse more than this per connection attempt.
pub const MAX_RECORD_LEN: usize = 4096;

/// Longest node name in a handshake, in bytes. Names are copied into errors and log lines; the
/// bound stops a client from inflating those (and fits two names in one record).
pub const MAX_NAME_LEN: usize = 1024;

/// Longest `Reject` reason kept, in bytes: longer reasons are cut when sent and when received, so
/// a peer cannot flood our logs through its rejections.
pub const MAX_REASON_LEN: usize = 512;

/// Default bound on the difference between the two nodes' wall clocks: 5 minutes.
pub const DEFAULT_MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// Default time the whole handshake may take, from the WebSocket upgrade to `Ready`: 5 seconds.
/// Either side that reaches it sends a [`RejectCode::Timeout`] (best-effort) and closes, so a peer
/// that goes silent mid-handshake cannot pin a connection slot.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Frame-decoder limits for the handshake phase: one frame per batch, one record per frame. A
/// driver decodes with these until the handshake is over, so an unauthenticated peer cannot make it
/// buffer a full-size (64 MiB) message.
pub const HANDSHAKE_LIMITS: Limits = Limits {
    max_payload: MAX_RECORD_LEN,
    max_batch: BATCH_HEADER_LEN + FRAME_HEADER_LEN + MAX_RECORD_LEN + CHECKSUM_LEN,
    max_frames: 1,
    items: false,
    copy_payloads: false,
};

/// Who is at the other end of a connection that completed its handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's node name (checked against our expectations and bound into the proofs).
    pub name: String,
    /// The peer process's instance id: a different value than on the previous connection means
    /// the peer restarted.
    pub instance: InstanceId,
    /// Whether frames on this connection carry CRC-32 checksums (both sides use the agreed value).
    pub checksum: bool,
    /// The peer's wall clock minus ours, in milliseconds, as estimated during the handshake
    /// (positive: the peer's clock is ahead). Accurate to about one network round trip.
    pub clock_offset_ms: i64,
    /// The largest payload the peer says it accepts (informational: each side enforces its own).
    pub max_payload: u64,
    /// The handler table the peer announced in its handshake record (its first part, if the
    /// rest follows in `Handlers` frames); `None` from a peer of a version that announces none,
    /// which must then get no `Handlers` frames either (`PROTOCOL.md` section 9).
    pub handlers: Option<HandlerTable>,
    /// The optional features this connection uses: those both sides offered (`PROTOCOL.md`
    /// 7.3). None with a peer of a version before features.
    pub features: Features,
    /// The call metadata the peer accepts, from its `Confirm` or `Ready`; `None` from a peer of
    /// a version without metadata, which must then be sent none (`PROTOCOL.md` section 3).
    pub metadata: Option<crate::frame::MetadataLimits>,
}

/// Optional protocol features, offered in the `Hello` and agreed in the `Welcome` (key
/// `features`, a bit set): a node uses one only with a peer that agreed to it, so an older peer
/// is never sent what it would take for a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Features(u64);

impl Features {
    /// No optional feature.
    pub const NONE: Features = Features(0);
    /// Large frames travel in parts (`Chunk` and `ChunkAbort` frames, `PROTOCOL.md` section 10).
    pub const CHUNKS: Features = Features(1);
    /// Unary requests and responses may travel LZ4-compressed (`PROTOCOL.md` section 11).
    pub const LZ4: Features = Features(2);
    /// A stream's small messages may travel packed in `Items` frames (`PROTOCOL.md` section 12).
    pub const ITEMS: Features = Features(4);

    /// The set with these wire bits (unknown bits are kept: they are dropped by intersection).
    pub const fn from_bits(bits: u64) -> Features {
        Features(bits)
    }

    /// The wire bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Both sets together.
    #[must_use]
    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    /// What both sets hold.
    #[must_use]
    pub const fn intersect(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }

    /// True when every feature of `other` is in `self`.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A fresh nonce from the operating system's secure random source.
///
/// # Errors
///
/// When the operating system cannot provide random bytes. Never fall back to a predictable nonce:
/// that would make handshakes replayable.
pub fn random_nonce() -> std::io::Result<Nonce> {
    random_bytes()
}

/// A fresh instance id from the operating system's secure random source.
///
/// # Errors
///
/// When the operating system cannot provide random bytes.
pub fn random_instance() -> std::io::Result<InstanceId> {
    random_bytes()
}

fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(out)
}

/// `|a - b|` without overflow, saturating at `i64::MAX`.
fn abs_diff_ms(a: i64, b: i64) -> i64 {
    i64::try_from(a.abs_diff(b)).unwrap_or(i64::MAX)
}

/// `a - b`, saturating.
fn offset_ms(a: i64, b: i64) -> i64 {
    a.saturating_sub(b)
}

/// A clock difference for a log line: "400.0 s".
fn secs(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// The reason given when `peer`'s clock is `offset_ms` ahead of `local`'s (negative: behind) and
/// that exceeds `max_ms`. Worded to read the same in both nodes' logs.
fn skew_reason(peer: &str, local: &str, offset_ms: i64, max_ms: i64) -> String {
    let dir = if offset_ms > 0 { "ahead of" } else { "behind" };
    format!(
        "clock skew of {} exceeds the allowed {}: {peer} is {dir} {local}",
        secs(abs_diff_ms(offset_ms, 0)),
        secs(max_ms)
    )
}
