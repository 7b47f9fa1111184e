//! The acceptor's side of the handshake: check the dialer's `Hello` against policy, answer with a
//! signed `Welcome`, check the dialer's `Confirm`, send `Ready`.
//!
//! ```text
//!  new ─▶ AcceptorHandshake ──on_hello──▶ AcceptorAwaitConfirm ──on_confirm──▶ PeerInfo
//!                 │   Welcome sent ─┘              │        └─ Ready sent
//!                 └─────────── Rejection ◀─────────┘
//! ```
//!
//! Policy checks (name, membership, direction, clock) run on the `Hello` before the dialer is
//! authenticated, so their reasons reach whoever connects; they reveal nothing beyond this node's
//! name and whether a claimed name is a member. The dialer is authenticated by its `Confirm`.

use bytes::Bytes;

use super::error::{expect_frame, Rejection};
use super::records::{
    check_name, decode, encode, handshake_frame, transcript, ConfirmBody, HelloRecord,
    MetadataRecord, NameProbe, ReadyRecord, RejectCode, SignedRecord, VersionProbe, WelcomeBody,
    CONFIRM_TAG, WELCOME_TAG,
};
use super::Features;
use super::{abs_diff_ms, offset_ms, should_dial, skew_reason, InstanceId, Nonce, PeerInfo};
use crate::auth::Authenticator;
use crate::frame::{Frame, MetadataLimits, Op, PROTOCOL_VERSION};
use crate::table::HandlerTable;

/// What the acceptor puts in its `Welcome`, and what it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptorParams {
    /// This node's name; the `Hello` must be addressed to exactly this name.
    pub local: String,
    /// This process's instance id ([`random_instance`](super::random_instance), once per process).
    pub instance: InstanceId,
    /// A fresh nonce for this connection ([`random_nonce`](super::random_nonce)); never reuse one.
    pub nonce: Nonce,
    /// Whether this node wants CRC-32 checksums on every frame. The connection uses checksums
    /// when either side wants them.
    pub checksum: bool,
    /// This node's payload limit, announced to the peer.
    pub max_payload: u64,
    /// Largest clock difference accepted, in milliseconds
    /// ([`DEFAULT_MAX_SKEW_MS`](super::DEFAULT_MAX_SKEW_MS) by default).
    pub max_skew_ms: i64,
}

/// The acceptor of a new connection, waiting for `Hello`.
#[derive(Debug)]
pub struct AcceptorHandshake {
    params: AcceptorParams,
    /// The handler table message to put in the `Ready`, if any.
    handlers: Option<Bytes>,
    /// The optional features this node takes up when the dialer offers them.
    features: Features,
    /// The metadata limits to announce in the `Ready`, if any.
    metadata: Option<MetadataLimits>,
}

impl AcceptorHandshake {
    /// An acceptor waiting for the dialer's `Hello`.
    pub fn new(params: AcceptorParams) -> AcceptorHandshake {
        AcceptorHandshake {
            params,
            handlers: None,
            features: Features::NONE,
            metadata: None,
        }
    }

    /// Takes up `features` when the dialer's `Hello` offers them: the connection uses the
    /// features both offer ([`PeerInfo::features`]). Without it the acceptor agrees to none, as
    /// a node of the version before features did.
    pub fn offer(mut self, features: Features) -> AcceptorHandshake {
        self.features = features;
        self
    }


    /// Announces the call metadata this node accepts in the `Ready`. Without it the acceptor
    /// looks like a node of a version without metadata: the dialer sends it none.
    pub fn accept_metadata(mut self, limits: MetadataLimits) -> AcceptorHandshake {
        self.metadata = Some(limits);
        self
    }

    /// Announces this node's handler table (a table message, at most
    /// [`MAX_HANDSHAKE_TABLE_LEN`](crate::table::MAX_HANDSHAKE_TABLE_LEN) bytes) in the `Ready`,
    /// which is sent only once the dialer has proved itself. Without it the acceptor looks like
    /// a node of a version without tables.
    pub fn announce(mut self, table: Bytes) -> AcceptorHandshake {
        self.handlers = Some(table);
        self
    }

    /// Handles the dialer's first message, received at wall-clock time `now_ms`.
    ///
    /// Checks, in order: that it is a `Hello`; that it decodes within bounds; its version; that it
    /// is addressed to this node ([`RejectCode::WrongTarget`]); that its sender is a member
    /// according to `is_known_peer` and not this node ([`RejectCode::UnknownPeer`]); that the
    /// sender is the side that dials this pair ([`should_dial`], [`RejectCode::WrongDirection`]);
    /// the clock skew ([`RejectCode::ClockSkew`]). Then returns the signed `Welcome` to send.
    ///
    /// # Errors
    ///
    /// A [`Rejection`]: the error, and the `Reject` frame to send (best-effort) before closing.
    pub fn on_hello(
        self,
        frame: Frame,
        now_ms: i64,
        is_known_peer: &dyn Fn(&str) -> bool,
        auth: &dyn Authenticator,
    ) -> Result<(Frame, AcceptorAwaitConfirm), Rejection> {
        let (p, handlers, offered, metadata) =
            (self.params, self.handlers, self.features, self.metadata);
        let hello = expect_frame(frame, Op::Hello, "")?;
        let malformed = |peer: &str, detail| Rejection::malformed(peer, Op::Hello, detail);
        let probe: VersionProbe = decode("Hello", &hello).map_err(|d| malformed("", d))?;
        if probe.version != PROTOCOL_VERSION {
            let peer = decode::<NameProbe>("Hello", &hello)
                .ok()
                .map(|n| n.from)
                .filter(|from| check_name("from", from).is_ok())
                .unwrap_or_default();
            return Err(Rejection::version(&peer, PROTOCOL_VERSION, probe.version));
        }
        let record: HelloRecord = decode("Hello", &hello).map_err(|d| malformed("", d))?;
        check_name("from", &record.from).map_err(|d| malformed("", d))?;
        let peer = record.from.as_str();
        check_name("to", &record.to).map_err(|d| malformed(peer, d))?;

        let refuse = |code, reason| Rejection::refuse(peer, code, reason);
        if record.to != p.local {
            return Err(refuse(
                RejectCode::WrongTarget,
                format!("{peer} dialed {} but reached {}", record.to, p.local),
            ));
        }
        if record.from == p.local {
            return Err(refuse(
                RejectCode::UnknownPeer,
                format!("{peer} is {}'s own name", p.local),
            ));
        }
        if !is_known_peer(peer) {
            return Err(refuse(
                RejectCode::UnknownPeer,
                format!("{peer} is not a member of {}'s cluster", p.local),
            ));
        }
        if !should_dial(peer, &p.local) {
            return Err(refuse(
                RejectCode::WrongDirection,
                format!(
                    "{} dials {peer}, not the other way round (dial rule of protocol version {})",
                    p.local, PROTOCOL_VERSION
                ),
            ));
        }
        let offset = offset_ms(record.time_ms, now_ms);
        if abs_diff_ms(offset, 0) > p.max_skew_ms {
            return Err(refuse(
                RejectCode::ClockSkew,
                skew_reason(peer, &p.local, offset, p.max_skew_ms),
            ));
        }

        let checksum = record.checksum || p.checksum;
        let features = offered.intersect(Features::from_bits(record.features));
        let body = encode(&WelcomeBody {
            version: PROTOCOL_VERSION,
            from: p.local,
            instance: p.instance,
            time_ms: now_ms,
            nonce: p.nonce,
            checksum,
            max_payload: p.max_payload,
            features: features.bits(),
        });
        let proof = auth.prove(peer, &transcript(WELCOME_TAG, &[&hello, &body]));
        let welcome = Bytes::from(encode(&SignedRecord { body, proof }));
        let frame = Frame::Handshake {
            op: Op::Welcome,
            payload: welcome.clone(),
        };
        let next = AcceptorAwaitConfirm {
            hello,
            welcome,
            handlers,
            metadata,
            peer: PeerInfo {
                name: record.from,
                instance: record.instance,
                checksum,
                clock_offset_ms: offset,
                max_payload: record.max_payload,
                handlers: None,
                features,
                metadata: None,
            },
        };
        Ok((frame, next))
    }
}

/// The acceptor after sending `Welcome`, waiting for the dialer's `Confirm`.
#[derive(Debug)]
pub struct AcceptorAwaitConfirm {
    /// The exact `Hello` bytes received.
    hello: Bytes,
    /// The exact `Welcome` bytes sent.
    welcome: Bytes,
    /// This node's handler table message, for the `Ready`.
    handlers: Option<Bytes>,
    /// This node's metadata limits, for the `Ready`.
    metadata: Option<MetadataLimits>,
    peer: PeerInfo,
}

impl AcceptorAwaitConfirm {
    /// The name the dialer claims. Not authenticated until [`on_confirm`](Self::on_confirm)
    /// succeeds.
    pub fn claimed_peer(&self) -> &str {
        &self.peer.name
    }

    /// Handles the dialer's `Confirm`: if its proof verifies (the dialer holds the cluster secret
    /// and answered *this* `Welcome`), returns the `Ready` frame to send and the authenticated
    /// peer, with the handler table its `Confirm` announced, if any. After sending `Ready` the
    /// connection is live on this side.
    ///
    /// # Errors
    ///
    /// A [`Rejection`]: the dialer's `Reject` (for instance [`RejectCode::BadProof`] when our
    /// secret differs), [`RejectCode::BadProof`] when its proof fails, or a malformed or
    /// unexpected frame (a malformed handler table included).
    pub fn on_confirm(
        mut self,
        frame: Frame,
        auth: &dyn Authenticator,
    ) -> Result<(Frame, PeerInfo), Rejection> {
        let peer = self.peer.name.as_str();
        let malformed = |detail| Rejection::malformed(peer, Op::Confirm, detail);
        let confirm = expect_frame(frame, Op::Confirm, peer)?;
        let signed: SignedRecord = decode("Confirm", &confirm).map_err(malformed)?;
        let body: ConfirmBody = decode("Confirm body", &signed.body).map_err(malformed)?;
        let signed_part = transcript(CONFIRM_TAG, &[&self.hello, &self.welcome, &signed.body]);
        if !auth.verify(peer, &signed_part, &signed.proof) {
            return Err(Rejection::refuse(
                peer,
                RejectCode::BadProof,
                format!(
                    "the Confirm's proof does not verify: {peer} does not hold this cluster's \
                     secret, or the Confirm was not made for this connection"
                ),
            ));
        }
        // Checked once the dialer has proved itself: before, a stranger's table is not worth
        // reading.
        let handlers = body
            .handlers
            .map(|t| HandlerTable::decode(&t))
            .transpose()
            .map_err(|e| malformed(format!("Confirm body: handler table: {e}")))?;
        let ready = handshake_frame(
            Op::Ready,
            encode(&ReadyRecord {
                handlers: self.handlers.map(|t| t.to_vec()),
                metadata: self.metadata.map(MetadataRecord::of),
            }),
        );
        self.peer.handlers = handlers;
        self.peer.metadata = body.metadata.map(MetadataRecord::limits);
        Ok((ready, self.peer))
    }
}
