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
//! With one cluster-wide secret, a valid proof shows that the other side *is a member of the
//! cluster*; it cannot show *which* member. Any holder of the secret can claim any node name.
//! An [`Authenticator`] with per-node keys (a signature scheme, say) can close that gap: it is
//! told the claimed peer name in [`Authenticator::verify`] and can pick that peer's key.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Proves this node to a peer and checks a peer's proof, over a handshake transcript.
///
/// Implementations must be deterministic for a given key: the handshake computes a proof on one
/// side and verifies it on the other over the same transcript bytes.
pub trait Authenticator: Send + Sync + 'static {
    /// Computes this node's proof over `transcript`.
    fn prove(&self, transcript: &[u8]) -> Vec<u8>;

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
    fn prove(&self, transcript: &[u8]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_hmac_matches_rfc4231_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let auth = HmacAuth::new("Jefe");
        let proof = auth.prove(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&proof),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(auth.verify("peer", b"what do ya want for nothing?", &proof));
    }

    #[test]
    fn auth_rejects_wrong_transcript_secret_and_length() {
        let auth = HmacAuth::new("cluster secret");
        let proof = auth.prove(b"transcript");
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
        let proof = auth.prove(b"t");
        assert!(auth.verify("peer", b"t", &proof));
    }
}
