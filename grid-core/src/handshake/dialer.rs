//! The dialer's side of the handshake: send `Hello`, check the acceptor's `Welcome` (its proof
//! first), answer with `Confirm`, wait for `Ready`.
//!
//! ```text
//!  start ──Hello──▶ DialerHandshake ──on_welcome──▶ DialerAwaitReady ──on_ready──▶ PeerInfo
//!                          │ Confirm sent ─┘                │
//!                          └──────────── Rejection ◀────────┘
//! ```

use bytes::Bytes;

use super::error::{expect_frame, Rejection};
use super::records::{
    check_name, decode, encode, handshake_frame, transcript, ConfirmBody, HelloRecord,
    MetadataRecord, ReadyRecord, RejectCode, SignedRecord, VersionProbe, WelcomeBody, CONFIRM_TAG,
    WELCOME_TAG,
};
use super::Features;
use super::{abs_diff_ms, offset_ms, skew_reason, InstanceId, Nonce, PeerInfo};
use crate::auth::Authenticator;
use crate::frame::{Frame, MetadataLimits, Op, PROTOCOL_VERSION};
use crate::table::HandlerTable;

/// What the dialer puts in its `Hello`, and what it accepts back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialerParams {
    /// This node's name.
    pub local: String,
    /// The name of the node being dialed; the `Welcome` must come from exactly this name.
    pub remote: String,
    /// This process's instance id ([`random_instance`](super::random_instance), once per process).
    pub instance: InstanceId,
    /// A fresh nonce for this connection ([`random_nonce`](super::random_nonce)); never reuse one.
    pub nonce: Nonce,
    /// The wall clock now, unix milliseconds.
    pub now_ms: i64,
    /// Whether this node wants CRC-32 checksums on every frame (links without TLS).
    pub checksum: bool,
    /// This node's payload limit, announced to the peer.
    pub max_payload: u64,
    /// Largest clock difference accepted, in milliseconds
    /// ([`DEFAULT_MAX_SKEW_MS`](super::DEFAULT_MAX_SKEW_MS) by default).
    pub max_skew_ms: i64,
}

/// The dialer after sending `Hello`, waiting for `Welcome`.
#[derive(Debug)]
pub struct DialerHandshake {
    local: String,
    remote: String,
    /// The exact `Hello` bytes sent: both proofs cover them.
    hello: Bytes,
    /// When the `Hello` was sent, for the clock offset estimate.
    sent_ms: i64,
    checksum: bool,
    max_skew_ms: i64,
    /// The handler table message to put in the `Confirm`, if any.
    handlers: Option<Bytes>,
    /// The features the `Hello` offered.
    offered: Features,
    /// The metadata limits to announce in the `Confirm`, if any.
    metadata: Option<MetadataLimits>,
}

impl DialerHandshake {
    /// Starts a handshake: returns the state and the `Hello` frame to send. Offers no optional
    /// feature, as a node of the version before features did.
    pub fn start(params: DialerParams) -> (DialerHandshake, Frame) {
        DialerHandshake::start_offering(params, Features::NONE)
    }

    /// [`start`](Self::start), offering `features` in the `Hello`; the `Welcome` says which of
    /// them the connection uses ([`PeerInfo::features`]).
    pub fn start_offering(params: DialerParams, features: Features) -> (DialerHandshake, Frame) {
        let record = HelloRecord {
            version: PROTOCOL_VERSION,
            from: params.local.clone(),
            to: params.remote.clone(),
            instance: params.instance,
            time_ms: params.now_ms,
            nonce: params.nonce,
            checksum: params.checksum,
            max_payload: params.max_payload,
            features: features.bits(),
        };
        let hello = Bytes::from(encode(&record));
        let frame = Frame::Handshake {
            op: Op::Hello,
            payload: hello.clone(),
        };
        let state = DialerHandshake {
            local: params.local,
            remote: params.remote,
            hello,
            sent_ms: params.now_ms,
            checksum: params.checksum,
            max_skew_ms: params.max_skew_ms,
            handlers: None,
            offered: features,
            metadata: None,
        };
        (state, frame)
    }

    /// Announces this node's handler table (a table message, at most
    /// [`MAX_HANDSHAKE_TABLE_LEN`](crate::table::MAX_HANDSHAKE_TABLE_LEN) bytes) in the
    /// `Confirm`. Without it the dialer looks like a node of a version without tables.
    pub fn announce(mut self, table: Bytes) -> DialerHandshake {
        self.handlers = Some(table);
        self
    }

    /// Announces the call metadata this node accepts in the `Confirm`. Without it the dialer
    /// looks like a node of a version without metadata: the acceptor sends it none.
    pub fn accept_metadata(mut self, limits: MetadataLimits) -> DialerHandshake {
        self.metadata = Some(limits);
        self
    }

    /// The node being dialed.
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// Handles the acceptor's answer, received at wall-clock time `now_ms`.
    ///
    /// Checks, in order: that it is a `Welcome` (a `Reject` ends the handshake with
    /// [`HandshakeError::Rejected`](super::HandshakeError::Rejected)); that it decodes within
    /// bounds; its version; its proof (the acceptor holds the cluster secret and answered *this*
    /// `Hello`); that it comes from the node we dialed; that it kept the checksums we asked for;
    /// the clock skew. Then returns the `Confirm` frame to send and the next state.
    ///
    /// # Errors
    ///
    /// A [`Rejection`]: the error, and the `Reject` frame to send (best-effort) before closing.
    pub fn on_welcome(
        self,
        frame: Frame,
        now_ms: i64,
        auth: &dyn Authenticator,
    ) -> Result<(Frame, DialerAwaitReady), Rejection> {
        let peer = self.remote.as_str();
        let malformed = |detail| Rejection::malformed(peer, Op::Welcome, detail);
        let welcome = expect_frame(frame, Op::Welcome, peer)?;
        let signed: SignedRecord = decode("Welcome", &welcome).map_err(malformed)?;
        let probe: VersionProbe = decode("Welcome body", &signed.body).map_err(malformed)?;
        if probe.version != PROTOCOL_VERSION {
            return Err(Rejection::version(peer, PROTOCOL_VERSION, probe.version));
        }
        let body: WelcomeBody = decode("Welcome body", &signed.body).map_err(malformed)?;
        check_name("from", &body.from).map_err(malformed)?;

        let signed_part = transcript(WELCOME_TAG, &[&self.hello, &signed.body]);
        if !auth.verify(&body.from, &signed_part, &signed.proof) {
            return Err(Rejection::refuse(
                peer,
                RejectCode::BadProof,
                format!(
                    "the Welcome's proof does not verify: {} does not hold {}'s cluster secret, \
                     or the Welcome was not made for this connection",
                    body.from, self.local
                ),
            ));
        }
        if body.from != self.remote {
            return Err(Rejection::refuse(
                peer,
                RejectCode::WrongTarget,
                format!(
                    "{} dialed {} but reached {}",
                    self.local, self.remote, body.from
                ),
            ));
        }
        if self.checksum && !body.checksum {
            return Err(malformed(
                "the Welcome turned off the per-frame checksums the Hello asked for".to_owned(),
            ));
        }
        let agreed = Features::from_bits(body.features);
        if !self.offered.contains(agreed) {
            return Err(malformed(format!(
                "the Welcome agreed to features {:#x} the Hello did not offer ({:#x})",
                body.features,
                self.offered.bits()
            )));
        }
        // The acceptor read its clock between our send and our receive: compare with the middle.
        let midpoint = ((i128::from(self.sent_ms) + i128::from(now_ms)) / 2) as i64;
        let offset = offset_ms(body.time_ms, midpoint);
        if abs_diff_ms(offset, 0) > self.max_skew_ms {
            return Err(Rejection::refuse(
                peer,
                RejectCode::ClockSkew,
                skew_reason(&body.from, &self.local, offset, self.max_skew_ms),
            ));
        }

        let confirm_body = encode(&ConfirmBody {
            handlers: self.handlers.map(|t| t.to_vec()),
            metadata: self.metadata.map(MetadataRecord::of),
        });
        let proof = auth.prove(
            &body.from,
            &transcript(CONFIRM_TAG, &[&self.hello, &welcome, &confirm_body]),
        );
        let confirm = handshake_frame(
            Op::Confirm,
            encode(&SignedRecord {
                body: confirm_body,
                proof,
            }),
        );
        let next = DialerAwaitReady {
            peer: PeerInfo {
                name: body.from,
                instance: body.instance,
                checksum: body.checksum,
                clock_offset_ms: offset,
                max_payload: body.max_payload,
                handlers: None,
                features: agreed,
                metadata: None,
            },
        };
        Ok((confirm, next))
    }
}

/// The dialer after sending `Confirm`, waiting for `Ready`. It must not send calls yet.
#[derive(Debug)]
pub struct DialerAwaitReady {
    peer: PeerInfo,
}

impl DialerAwaitReady {
    /// The peer as the `Welcome` described it (already authenticated).
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Handles the acceptor's last message. `Ready` completes the handshake: the connection is
    /// live, and frames that follow are ordinary traffic. The acceptor's handler table, if it
    /// sent one, is in the returned [`PeerInfo::handlers`].
    ///
    /// # Errors
    ///
    /// A [`Rejection`]: the acceptor's `Reject` (for instance [`RejectCode::BadProof`] when our
    /// secret differs), or a malformed or unexpected frame (a malformed handler table included).
    pub fn on_ready(mut self, frame: Frame) -> Result<PeerInfo, Rejection> {
        let peer = self.peer.name.as_str();
        let malformed = |detail| Rejection::malformed(peer, Op::Ready, detail);
        let ready = expect_frame(frame, Op::Ready, peer)?;
        let record: ReadyRecord = decode("Ready", &ready).map_err(malformed)?;
        let handlers = record
            .handlers
            .map(|t| HandlerTable::decode(&t))
            .transpose()
            .map_err(|e| malformed(format!("Ready record: handler table: {e}")))?;
        self.peer.handlers = handlers;
        self.peer.metadata = record.metadata.map(MetadataRecord::limits);
        Ok(self.peer)
    }
}
