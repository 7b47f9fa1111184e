//! The handshake records: their msgpack form, the bounded decoder, and the proof transcripts.
//!
//! Every record is a msgpack map with field names (`rmp_serde::to_vec_named`). Decoding ignores
//! keys it does not know, so a later version can add fields; a record that is not a map of the
//! expected types, is longer than [`MAX_RECORD_LEN`], nests deeper than [`MAX_DEPTH`] or has bytes
//! after the map is refused. Byte strings (nonces, instance ids, proofs, signed bodies) are msgpack
//! `bin`, never arrays of integers.

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{InstanceId, Nonce, MAX_NAME_LEN, MAX_REASON_LEN, MAX_RECORD_LEN};
use crate::frame::{Frame, Op};

/// Deepest msgpack nesting a handshake record may have. Our records nest at most one level; the
/// bound stops a few kilobytes of `[[[[...` from costing deep recursion in the decoder.
pub(super) const MAX_DEPTH: usize = 8;

/// Domain tag that opens the transcript the acceptor's proof (in `Welcome`) covers.
pub(super) const WELCOME_TAG: &[u8] = b"grid/1 welcome\0";

/// Domain tag that opens the transcript the dialer's proof (in `Confirm`) covers.
pub(super) const CONFIRM_TAG: &[u8] = b"grid/1 confirm\0";

/// Dialer → acceptor, first message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct HelloRecord {
    /// Protocol version the dialer speaks.
    pub(super) version: u8,
    /// The dialer's node name.
    pub(super) from: String,
    /// The name the dialer believes it is calling.
    pub(super) to: String,
    /// The dialer process's instance id.
    #[serde(with = "bin_array")]
    pub(super) instance: InstanceId,
    /// The dialer's wall clock when it sent the hello, unix ms.
    pub(super) time_ms: i64,
    /// Fresh random bytes of the dialer, bound into the acceptor's proof.
    #[serde(with = "bin_array")]
    pub(super) nonce: Nonce,
    /// The dialer wants per-frame checksums.
    pub(super) checksum: bool,
    /// The dialer's payload limit (informational).
    pub(super) max_payload: u64,
    /// Optional features the dialer offers ([`Features`](super::Features) bits); absent (0)
    /// from an older dialer, which offers none. An older acceptor ignores the key.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) features: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The signed part of the acceptor's `Welcome`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct WelcomeBody {
    /// Protocol version the acceptor speaks.
    pub(super) version: u8,
    /// The acceptor's node name.
    pub(super) from: String,
    /// The acceptor process's instance id.
    #[serde(with = "bin_array")]
    pub(super) instance: InstanceId,
    /// The acceptor's wall clock when it answered, unix ms.
    pub(super) time_ms: i64,
    /// Fresh random bytes of the acceptor, bound into the dialer's proof.
    #[serde(with = "bin_array")]
    pub(super) nonce: Nonce,
    /// The agreed checksum setting: the dialer's wish or the acceptor's own.
    pub(super) checksum: bool,
    /// The acceptor's payload limit (informational).
    pub(super) max_payload: u64,
    /// The features both sides use: those of the `Hello` the acceptor offers too. Absent (0)
    /// from an older acceptor, or when nothing is agreed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(super) features: u64,
}

/// The signed part of the dialer's `Confirm`, covered by the proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ConfirmBody {
    /// The dialer's handler table, or its first part (`PROTOCOL.md` section 9). Absent from an
    /// older dialer, which announces none; an older acceptor ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bin")]
    pub(super) handlers: Option<Vec<u8>>,
    /// The call metadata the dialer accepts (`PROTOCOL.md` section 3, "Metadata"). Absent from
    /// an older dialer, which takes none; an older acceptor ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<MetadataRecord>,
}

/// The metadata limits a side announces: what one call to it may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MetadataRecord {
    /// Most entries.
    pub(super) entries: u64,
    /// Most bytes of keys and values together.
    pub(super) bytes: u64,
}

impl MetadataRecord {
    pub(super) fn of(limits: crate::frame::MetadataLimits) -> MetadataRecord {
        MetadataRecord {
            entries: limits.entries as u64,
            bytes: limits.bytes as u64,
        }
    }

    pub(super) fn limits(self) -> crate::frame::MetadataLimits {
        crate::frame::MetadataLimits {
            entries: usize::try_from(self.entries).unwrap_or(usize::MAX),
            bytes: usize::try_from(self.bytes).unwrap_or(usize::MAX),
        }
    }
}

/// `Welcome` and `Confirm` on the wire: the encoded body, kept as the exact bytes the proof
/// covers, and the proof. Signing bytes rather than a re-encoding of decoded fields is what lets
/// a newer peer add body fields that an older peer ignores without breaking its proof check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SignedRecord {
    /// The encoded body map.
    #[serde(with = "bin_vec")]
    pub(super) body: Vec<u8>,
    /// The sender's proof over the transcript.
    #[serde(with = "bin_vec")]
    pub(super) proof: Vec<u8>,
}

/// Acceptor → dialer: the connection is live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ReadyRecord {
    /// The acceptor's handler table, or its first part (`PROTOCOL.md` section 9), sent only now
    /// that the dialer has proved itself. Absent from an older acceptor; an older dialer ignores
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bin")]
    pub(super) handlers: Option<Vec<u8>>,
    /// The call metadata the acceptor accepts; absent from an older acceptor, which takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<MetadataRecord>,
}

/// Either side: the handshake is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RejectRecord {
    /// A [`RejectCode`] wire value.
    pub(super) code: u8,
    /// Why, for the other side's log.
    pub(super) reason: String,
}

/// Only the `version` key of a record, read before the rest so a peer of another version gets
/// `BadVersion` rather than `Malformed` however its other fields changed.
#[derive(Deserialize)]
pub(super) struct VersionProbe {
    pub(super) version: u8,
}

/// Only the `from` key of a record: read from a record of another version, only to name the
/// sender in the error.
#[derive(Deserialize)]
pub(super) struct NameProbe {
    pub(super) from: String,
}

/// Why a handshake was refused. The numeric values are the wire values (section 7 of
/// `PROTOCOL.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectCode {
    /// The peer speaks another protocol version.
    BadVersion,
    /// The dialer's name is not a member of the receiver's cluster.
    UnknownPeer,
    /// The dialer called a name that is not the acceptor's (or the dialer reached a node other
    /// than the one it meant to call).
    WrongTarget,
    /// This pair of nodes must be dialed by the other side (see [`dialer_of`](crate::dialer_of)).
    WrongDirection,
    /// The two wall clocks differ by more than the allowed skew.
    ClockSkew,
    /// The authentication proof did not verify: a different cluster secret, or a forgery.
    BadProof,
    /// A record that does not decode, or is out of bounds.
    Malformed,
    /// A message that is not valid in the receiver's handshake state.
    Unexpected,
    /// The receiver is shutting down.
    ShuttingDown,
    /// The handshake did not complete in time.
    Timeout,
    /// The receiver is up but not serving yet (it is registering its handlers); retry.
    NotReady,
    /// A code this version does not know; kept so it can be logged.
    Other(u8),
}

impl RejectCode {
    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            RejectCode::BadVersion => 1,
            RejectCode::UnknownPeer => 2,
            RejectCode::WrongTarget => 3,
            RejectCode::WrongDirection => 4,
            RejectCode::ClockSkew => 5,
            RejectCode::BadProof => 6,
            RejectCode::Malformed => 7,
            RejectCode::Unexpected => 8,
            RejectCode::ShuttingDown => 9,
            RejectCode::Timeout => 10,
            RejectCode::NotReady => 11,
            RejectCode::Other(v) => v,
        }
    }

    /// Parses a wire value; unknown values are kept as [`RejectCode::Other`].
    pub const fn from_u8(v: u8) -> RejectCode {
        match v {
            1 => RejectCode::BadVersion,
            2 => RejectCode::UnknownPeer,
            3 => RejectCode::WrongTarget,
            4 => RejectCode::WrongDirection,
            5 => RejectCode::ClockSkew,
            6 => RejectCode::BadProof,
            7 => RejectCode::Malformed,
            8 => RejectCode::Unexpected,
            9 => RejectCode::ShuttingDown,
            10 => RejectCode::Timeout,
            11 => RejectCode::NotReady,
            v => RejectCode::Other(v),
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RejectCode::BadVersion => "bad version",
            RejectCode::UnknownPeer => "unknown peer",
            RejectCode::WrongTarget => "wrong target",
            RejectCode::WrongDirection => "wrong direction",
            RejectCode::ClockSkew => "clock skew",
            RejectCode::BadProof => "bad proof",
            RejectCode::Malformed => "malformed",
            RejectCode::Unexpected => "unexpected message",
            RejectCode::ShuttingDown => "shutting down",
            RejectCode::Timeout => "timeout",
            RejectCode::NotReady => "not ready",
            RejectCode::Other(v) => return write!(f, "reject code {v}"),
        };
        f.write_str(name)
    }
}

/// A `Reject` frame to send to the other side: `code` and a `reason` for its log.
///
/// The reason is cut to [`MAX_REASON_LEN`] bytes (at a character boundary). The state machines
/// build their own rejections; the connection driver uses this for refusals that come from outside
/// the handshake, such as [`RejectCode::ShuttingDown`] or [`RejectCode::Timeout`].
pub fn reject_frame(code: RejectCode, reason: &str) -> Frame {
    let record = RejectRecord {
        code: code.to_u8(),
        reason: truncate(reason, MAX_REASON_LEN).to_owned(),
    };
    handshake_frame(Op::Reject, encode(&record))
}

/// A handshake frame carrying `payload`.
pub(super) fn handshake_frame(op: Op, payload: Vec<u8>) -> Frame {
    Frame::Handshake {
        op,
        payload: Bytes::from(payload),
    }
}

/// Encodes a record as a msgpack map with field names.
pub(super) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Our records hold only strings, integers, booleans and byte strings: encoding into a Vec
    // cannot fail.
    rmp_serde::to_vec_named(record).expect("handshake records always encode")
}

/// Decodes one record from exactly `bytes`, within the handshake's bounds. The error is a detail
/// for the log and the `Reject` reason.
pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, String> {
    if bytes.len() > MAX_RECORD_LEN {
        return Err(format!(
            "{what} record of {} bytes exceeds the {MAX_RECORD_LEN}-byte limit",
            bytes.len()
        ));
    }
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_DEPTH);
    let record = T::deserialize(&mut de).map_err(|e| format!("{what} record: {e}"))?;
    drop(de);
    if !rest.is_empty() {
        return Err(format!(
            "{what} record: {} trailing bytes after the map",
            rest.len()
        ));
    }
    Ok(record)
}

/// Checks a node name from the wire: 1 ..= [`MAX_NAME_LEN`] bytes, no control characters (names
/// end up in log lines).
pub(super) fn check_name(field: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "`{field}` of {} bytes exceeds the {MAX_NAME_LEN}-byte limit",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("`{field}` contains control characters"));
    }
    Ok(())
}

/// A peer's `Reject` reason made safe for a log line: cut to [`MAX_REASON_LEN`] bytes, control
/// characters replaced.
pub(super) fn sanitize_reason(reason: &str) -> String {
    let clean: String = truncate(reason, MAX_REASON_LEN)
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    // A replacement character is longer than the control byte it replaces: cut again.
    truncate(&clean, MAX_REASON_LEN).to_owned()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A proof transcript: `tag`, then each part as a 4-byte big-endian length and its bytes.
/// The lengths make the concatenation unambiguous whatever the parts contain.
pub(super) fn transcript(tag: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = tag.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(tag);
    for part in parts {
        // Every part is a record under MAX_RECORD_LEN, far below u32::MAX.
        let part_len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&part_len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Serde adapter: a fixed-size byte array as msgpack `bin` of exactly that length.
mod bin_array {
    use std::fmt;

    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer, const N: usize>(
        v: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> Visitor<'_> for V<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a bin of {N} bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; N], E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V::<N>)
    }
}

/// Serde adapter: an optional byte vector as msgpack `bin` (the key is left out when `None`).
mod opt_bin {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_bytes(b),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        super::bin_vec::deserialize(d).map(Some)
    }
}

/// Serde adapter: a byte vector as msgpack `bin`.
mod bin_vec {
    use std::fmt;

    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bin")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_reject_code_round_trips() {
        for v in 0..=u8::MAX {
            assert_eq!(RejectCode::from_u8(v).to_u8(), v);
        }
        assert_eq!(RejectCode::from_u8(6), RejectCode::BadProof);
        assert_eq!(RejectCode::from_u8(200).to_string(), "reject code 200");
    }

    #[test]
    fn handshake_bytes_are_bin_not_arrays() {
        let rec = SignedRecord {
            body: vec![1, 2, 3],
            proof: vec![],
        };
        let bytes = encode(&rec);
        // fixmap(2), "body", bin8(3) 01 02 03, "proof", bin8(0)
        assert_eq!(
            hex::encode(&bytes),
            "82a4626f6479c403010203a570726f6f66c400"
        );
        assert_eq!(decode::<SignedRecord>("test", &bytes), Ok(rec));
    }

    #[test]
    fn handshake_decode_refuses_trailing_bytes_depth_and_size() {
        let mut bytes = encode(&ReadyRecord {
            handlers: None,
            metadata: None,
        });
        assert_eq!(bytes, [0x80]);
        bytes.push(0xc0);
        let err = decode::<ReadyRecord>("Ready", &bytes).expect_err("trailing byte");
        assert!(err.contains("trailing"), "{err}");

        // A map whose one unknown value nests 100 arrays deep.
        let mut deep = vec![0x81, 0xa1, b'x'];
        deep.extend(std::iter::repeat_n(0x91, 100));
        deep.push(0xc0);
        assert!(decode::<ReadyRecord>("Ready", &deep).is_err());

        // The table must be a bin, not an array of integers.
        let array = [
            0x81, 0xa8, b'h', b'a', b'n', b'd', b'l', b'e', b'r', b's', 0x91, 0x00,
        ];
        assert!(decode::<ReadyRecord>("Ready", &array).is_err());

        let big = vec![0u8; MAX_RECORD_LEN + 1];
        let err = decode::<ReadyRecord>("Ready", &big).expect_err("too big");
        assert!(err.contains("exceeds"), "{err}");
    }

    /// The records as a node of the version before handler tables had them: no fields.
    #[derive(Debug, PartialEq, Deserialize)]
    struct OldEmptyRecord {}

    #[test]
    fn handshake_handler_tables_are_a_key_older_nodes_ignore() {
        let table = vec![0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x07];
        let ready = encode(&ReadyRecord {
            handlers: Some(table.clone()),
            metadata: None,
        });
        // fixmap(1), "handlers", bin8(8) + the table message
        assert_eq!(
            hex::encode(&ready),
            "81a868616e646c657273c4080100000100000007"
        );
        let confirm = encode(&ConfirmBody {
            handlers: Some(table.clone()),
            metadata: None,
        });
        assert_eq!(confirm, ready);
        // An older node decodes both as the empty records it knew.
        assert_eq!(
            decode::<OldEmptyRecord>("Ready", &ready),
            Ok(OldEmptyRecord {})
        );
        assert_eq!(
            decode::<OldEmptyRecord>("Confirm body", &confirm),
            Ok(OldEmptyRecord {})
        );
        // A newer node reads the table, and reads an older node's records as "no table".
        assert_eq!(
            decode::<ReadyRecord>("Ready", &ready).map(|r| r.handlers),
            Ok(Some(table))
        );
        assert_eq!(
            decode::<ReadyRecord>("Ready", &[0x80]).map(|r| r.handlers),
            Ok(None)
        );
        assert_eq!(
            decode::<ConfirmBody>("Confirm body", &[0x80]).map(|r| r.handlers),
            Ok(None)
        );
        // With no table the records stay the empty maps of before.
        assert_eq!(
            encode(&ReadyRecord {
                handlers: None,
                metadata: None,
            }),
            [0x80]
        );
        assert_eq!(
            encode(&ConfirmBody {
                handlers: None,
                metadata: None,
            }),
            [0x80]
        );
    }

    #[test]
    fn handshake_metadata_limits_are_a_key_older_nodes_ignore() {
        let limits = MetadataRecord {
            entries: 64,
            bytes: 16384,
        };
        let ready = encode(&ReadyRecord {
            handlers: None,
            metadata: Some(limits),
        });
        // fixmap(1), "metadata", fixmap(2) {"entries": 64, "bytes": uint16 16384}: PROTOCOL.md 7.9.
        let mut expected = vec![0x81, 0xa8];
        expected.extend_from_slice(b"metadata");
        expected.extend_from_slice(&hex_bytes("82a7656e747269657340a56279746573cd4000"));
        assert_eq!(ready, expected);
        let back: ReadyRecord = decode("Ready", &ready).expect("decodes");
        assert_eq!(back.metadata, Some(limits));
        // An older node's records (no key) decode as "takes no metadata".
        let old: ConfirmBody = decode("Confirm body", &[0x80]).expect("decodes");
        assert_eq!(old.metadata, None);
        // An older node decoding ours ignores the key, as it ignores any key it does not know.
        #[derive(Deserialize)]
        struct OldReady {}
        let _: OldReady = decode("Ready", &ready).expect("an older node ignores the key");
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn handshake_reason_is_truncated_and_sanitized() {
        let long = "é".repeat(MAX_REASON_LEN); // 2 bytes each
        let cut = truncate(&long, MAX_REASON_LEN);
        assert_eq!(cut.len(), MAX_REASON_LEN);
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(sanitize_reason("a\nb\u{1b}[31m"), "a\u{fffd}b\u{fffd}[31m");
    }

    #[test]
    fn handshake_transcript_is_length_prefixed() {
        assert_eq!(
            transcript(b"t\0", &[b"ab", b""]),
            b"t\0\0\0\0\x02ab\0\0\0\0".to_vec()
        );
    }
}
