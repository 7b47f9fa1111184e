//! Authentication of connection handshakes.
//!
//! The [handshake](crate::handshake) asks an [`Authenticator`] for two things: a *proof* over a
//! transcript of the handshake so far, and a check of the proof the other side sent over the same
//! transcript. The transcript binds both node names, both per-connection nonces and every other
//! handshake field, so a proof is worthless on any other connection (see `PROTOCOL.md`, section 7).
//!
//! The default, [`HmacAuth`], is HMAC-SHA256 keyed with a secret shared by every member of the
//! cluster. The secret never crosses the wire: only MACs over fresh transcripts do.
//!
//! # What a shared secret does and does not prove
//!
//! With one cluster-wide secret ([`HmacAuth`], the default), a valid proof shows that the other
//! side *is a member of the cluster*; it cannot show *which* member. It protects against
//! outsiders (anyone without the secret cannot connect, impersonate a node to another, or replay
//! a captured handshake), but any holder of the secret can claim any node name — including a
//! live member's, whose session it would then replace.
//!
//! [`Keyring`] closes that gap with one key per *pair* of nodes: a node holds only the keys of
//! the pairs it belongs to, so it can prove its own name to every peer and no other name to
//! anyone. The keys are derived by the operator from a master secret that never goes to a node
//! ([`Keyring::pair_key`]); each node is given only its own row. Over TLS, mutual TLS with
//! certificate names bound to node names is the other way to the same end.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Proves this node to a peer and checks a peer's proof, over a handshake transcript.
///
/// Implementations must be deterministic for a given key: the handshake computes a proof on one
/// side and verifies it on the other over the same transcript bytes.
pub trait Authenticator: Send + Sync + 'static {
    /// Computes this node's proof over `transcript`, for the node named `peer` (an
    /// authenticator with one key per pair of nodes uses it to pick the key).
    fn prove(&self, peer: &str, transcript: &[u8]) -> Vec<u8>;

    /// Checks that `proof` is a valid proof over `transcript` by the node named `peer`.
    ///
    /// `peer` is the name the other side claims in this handshake (already bound into the
    /// transcript); an authenticator with one key per node uses it to pick the key. The
    /// comparison must be constant-time: a verifier that returns early on the first wrong byte
    /// lets an attacker forge a proof byte by byte.
    fn verify(&self, peer: &str, transcript: &[u8], proof: &[u8]) -> bool;
}

/// HMAC-SHA256 with a secret shared by the whole cluster: the default [`Authenticator`].
///
/// A proof is the 32-byte `HMAC-SHA256(secret, transcript)`. Verification recomputes it and
/// compares in constant time. The secret should be at least 32 random bytes; a short or guessable
/// secret can be brute-forced offline from one captured handshake.
///
/// `Debug` never prints the secret.
#[derive(Clone)]
pub struct HmacAuth {
    /// The HMAC already keyed with the secret; cloned for each proof so the key schedule runs once.
    keyed: Hmac<Sha256>,
}

impl HmacAuth {
    /// An authenticator keyed with the cluster's shared `secret` (any length; 32+ random bytes
    /// recommended).
    pub fn new(secret: impl AsRef<[u8]>) -> HmacAuth {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_ref())
            .expect("HMAC accepts keys of any length");
        HmacAuth { keyed }
    }
}

impl fmt::Debug for HmacAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacAuth")
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Authenticator for HmacAuth {
    fn prove(&self, _peer: &str, transcript: &[u8]) -> Vec<u8> {
        let mut mac = self.keyed.clone();
        mac.update(transcript);
        mac.finalize().into_bytes().to_vec()
    }

    fn verify(&self, _peer: &str, transcript: &[u8], proof: &[u8]) -> bool {
        let mut mac = self.keyed.clone();
        mac.update(transcript);
        // `verify_slice` compares in constant time and rejects a proof of the wrong length.
        mac.verify_slice(proof).is_ok()
    }
}

/// Per-pair keys: an [`Authenticator`] with which a member can prove only its own name.
///
/// Every pair of nodes `(a, b)` shares one 32-byte key, `pair_key(master, a, b)`
/// (HMAC-SHA256 of the master secret over the two names, sorted, with a separator). A node's
/// keyring holds the keys of its own pairs; a proof to `peer` is HMAC-SHA256 under the pair's key.
/// To pose as `a` to `b`, a member would need the key of the pair `(a, b)`, which only `a` and
/// `b` hold. A peer missing from the keyring is refused.
///
/// `Debug` never prints a key.
#[derive(Clone)]
pub struct Keyring {
    local: String,
    keys: std::collections::HashMap<String, HmacAuth>,
}

impl Keyring {
    /// An empty keyring for the node named `local`.
    pub fn new(local: impl Into<String>) -> Keyring {
        Keyring {
            local: local.into(),
            keys: std::collections::HashMap::new(),
        }
    }

    /// Adds the key this node shares with `peer`.
    pub fn with_peer(mut self, peer: impl Into<String>, key: impl AsRef<[u8]>) -> Keyring {
        self.keys.insert(peer.into(), HmacAuth::new(key));
        self
    }

    /// The key of the pair `(a, b)` (order does not matter), derived from the operator's
    /// `master` secret. Run this where the master lives — a provisioning tool — and give each
    /// node only the keys of its own pairs; a node that holds the master can derive every key.
    pub fn pair_key(master: impl AsRef<[u8]>, a: &str, b: &str) -> [u8; 32] {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(master.as_ref())
            .expect("HMAC accepts keys of any length");
        mac.update(b"grid pair key v1\n");
        mac.update(lo.as_bytes());
        mac.update(b"\n");
        mac.update(hi.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The keyring of `local` for `peers`, derived from `master` (convenience for tests and
    /// for provisioning tools; see [`pair_key`](Self::pair_key) on where the master may live).
    pub fn derive<I, S>(master: impl AsRef<[u8]>, local: &str, peers: I) -> Keyring
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut ring = Keyring::new(local);
        for p in peers {
            let p = p.as_ref();
            if p != local {
                ring = ring.with_peer(p, Keyring::pair_key(master.as_ref(), local, p));
            }
        }
        ring
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut peers: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        peers.sort_unstable();
        f.debug_struct("Keyring")
            .field("local", &self.local)
            .field("peers", &peers)
            .field("keys", &"<redacted>")
            .finish()
    }
}

impl Authenticator for Keyring {
    fn prove(&self, peer: &str, transcript: &[u8]) -> Vec<u8> {
        // With no key for `peer` the proof is empty, and the peer refuses it.
        self.keys
            .get(peer)
            .map_or_else(Vec::new, |k| k.prove(peer, transcript))
    }

    fn verify(&self, peer: &str, transcript: &[u8], proof: &[u8]) -> bool {
        self.keys
            .get(peer)
            .is_some_and(|k| k.verify(peer, transcript, proof))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_hmac_matches_rfc4231_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let auth = HmacAuth::new("Jefe");
        let proof = auth.prove("peer", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&proof),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(auth.verify("peer", b"what do ya want for nothing?", &proof));
    }

    #[test]
    fn auth_rejects_wrong_transcript_secret_and_length() {
        let auth = HmacAuth::new("cluster secret");
        let proof = auth.prove("peer", b"transcript");
        assert!(auth.verify("peer", b"transcript", &proof));
        assert!(!auth.verify("peer", b"transcript!", &proof));
        assert!(!HmacAuth::new("other secret").verify("peer", b"transcript", &proof));
        assert!(!auth.verify("peer", b"transcript", &proof[..31]));
        assert!(!auth.verify("peer", b"transcript", &[]));
        let mut flipped = proof.clone();
        flipped[31] ^= 1;
        assert!(!auth.verify("peer", b"transcript", &flipped));
    }

    #[test]
    fn auth_debug_hides_the_secret() {
        let auth = HmacAuth::new("hunter2-very-secret");
        let shown = format!("{auth:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn auth_is_object_safe_and_shareable() {
        let auth: std::sync::Arc<dyn Authenticator> = std::sync::Arc::new(HmacAuth::new("s"));
        let proof = auth.prove("peer", b"t");
        assert!(auth.verify("peer", b"t", &proof));
    }

    #[test]
    fn keyring_members_prove_only_their_own_name() {
        let names = ["a", "b", "c"];
        let ring = |n: &str| Keyring::derive("master", n, names);
        let (a, b, c) = (ring("a"), ring("b"), ring("c"));
        // a proves itself to b, and b accepts it as a.
        let proof = a.prove("b", b"t");
        assert!(b.verify("a", b"t", &proof));
        // c, holding only its own pairs, cannot make a proof b accepts as a's.
        for forged in [c.prove("b", b"t"), c.prove("a", b"t"), Vec::new()] {
            assert!(!b.verify("a", b"t", &forged));
        }
        // Keys are per pair, in either order, and unknown peers are refused.
        assert_eq!(
            Keyring::pair_key("m", "x", "y"),
            Keyring::pair_key("m", "y", "x")
        );
        assert!(!b.verify("d", b"t", &proof));
        let shown = format!("{b:?}");
        assert!(
            shown.contains("redacted") && shown.contains("\"a\""),
            "{shown}"
        );
    }
}
