//! Call metadata: a small, bounded set of key → bytes entries that a `Request` or `Open` carries
//! (a trace id, a token), kept in its wire form.
//!
//! A [`Metadata`] *is* its encoding (`PROTOCOL.md` section 3, "Metadata"): a `u16` count, then
//! per entry a one-byte key length, the key (UTF-8, 1..=255 bytes), a `u16` value length and the
//! value (0..=65 535 bytes), keys in strictly ascending byte order. Received metadata is a slice
//! of the received message, so decoding it copies and allocates nothing; lookups walk the entries
//! (they are few: `Config::max_metadata_entries`). A call without metadata holds an empty
//! `Bytes` and costs nothing on the wire: the frame's `METADATA` flag is clear.
//!
//! Sorted, unique keys make the encoding canonical (one set of entries, one byte string) and let
//! the decoder refuse duplicates in one pass, without allocating.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Longest metadata key in bytes: its length travels in one byte.
pub const MAX_METADATA_KEY_LEN: usize = 255;

/// Longest metadata value in bytes: its length travels in two bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 65_535;

/// Bytes of the entry count.
const COUNT_LEN: usize = 2;

/// Bytes of an entry's two length fields.
const ENTRY_OVERHEAD: usize = 3;

/// Why metadata could not be built or sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A key must have at least one byte.
    #[error("a metadata key cannot be empty")]
    EmptyKey,
    /// A key longer than [`MAX_METADATA_KEY_LEN`].
    #[error("metadata key of {len} bytes exceeds {MAX_METADATA_KEY_LEN}")]
    KeyTooLong {
        /// The key's length.
        len: usize,
    },
    /// A value longer than [`MAX_METADATA_VALUE_LEN`].
    #[error("metadata value of {len} bytes (key {key:?}) exceeds {MAX_METADATA_VALUE_LEN}")]
    ValueTooLong {
        /// The entry's key.
        key: String,
        /// The value's length.
        len: usize,
    },
    /// More entries than the limit (this node's `Config::max_metadata_entries`, or the peer's).
    #[error("{count} metadata entries exceed the limit of {limit}")]
    TooManyEntries {
        /// Entries of the call.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// More key and value bytes than the limit (`Config::max_metadata_bytes`, or the peer's).
    #[error("{bytes} bytes of metadata keys and values exceed the limit of {limit}")]
    TooLarge {
        /// Key and value bytes of the call.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer is of a version that takes no metadata (its handshake announced none): the call
    /// was not sent, rather than sent without it.
    #[error("{peer} does not accept call metadata (an older version)")]
    Unsupported {
        /// The peer.
        peer: String,
    },
}

/// The limits on one call's metadata a node accepts (and announces in its handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetadataLimits {
    /// Most entries.
    pub entries: usize,
    /// Most bytes of keys and values together.
    pub bytes: usize,
}

impl MetadataLimits {
    /// Checks `metadata` against these limits.
    ///
    /// # Errors
    /// [`MetadataError::TooManyEntries`] or [`MetadataError::TooLarge`].
    pub fn check(&self, metadata: &Metadata) -> Result<(), MetadataError> {
        let count = metadata.len();
        if count > self.entries {
            return Err(MetadataError::TooManyEntries {
                count,
                limit: self.entries,
            });
        }
        let bytes = metadata.data_len();
        if bytes > self.bytes {
            return Err(MetadataError::TooLarge {
                bytes,
                limit: self.bytes,
            });
        }
        Ok(())
    }

    /// The smaller of two limits, field by field: what both sides of a link accept.
    pub fn min(self, other: MetadataLimits) -> MetadataLimits {
        MetadataLimits {
            entries: self.entries.min(other.entries),
            bytes: self.bytes.min(other.bytes),
        }
    }
}

/// A call's metadata: key → bytes entries, keys unique and sorted, held in wire form.
///
/// ```
/// use grid_core::Metadata;
///
/// let mut md = Metadata::new();
/// md.insert("trace", "00-4bf9-01").unwrap();
/// md.insert("token", b"\xff\x00secret".as_slice()).unwrap();
/// md.insert("empty", "").unwrap();
/// assert_eq!(md.len(), 3);
/// assert_eq!(md.get("token"), Some(&b"\xff\x00secret"[..]));
/// assert_eq!(md.get("empty"), Some(&b""[..]));
/// assert_eq!(md.get("nope"), None);
/// let keys: Vec<&str> = md.iter().map(|(k, _)| k).collect();
/// assert_eq!(keys, ["empty", "token", "trace"]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata {
    /// The encoded block, or empty for no entries.
    wire: Bytes,
}

/// Keys and value lengths only: values are often credentials, and a `Context` or a call's
/// options end up in log lines.
impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Len(usize);
        impl fmt::Debug for Len {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{} bytes>", self.0)
            }
        }
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k, Len(v.len()))))
            .finish()
    }
}

impl Metadata {
    /// No entries.
    pub const fn new() -> Metadata {
        Metadata { wire: Bytes::new() }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        match self.wire.first_chunk::<COUNT_LEN>() {
            Some(c) => usize::from(u16::from_be_bytes(*c)),
            None => 0,
        }
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty()
    }

    /// Bytes of keys and values together: what `Config::max_metadata_bytes` bounds.
    pub fn data_len(&self) -> usize {
        self.wire
            .len()
            .saturating_sub(COUNT_LEN + ENTRY_OVERHEAD * self.len())
    }

    /// Bytes on the wire (0 without entries).
    pub fn encoded_len(&self) -> usize {
        self.wire.len()
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        let key = key.as_bytes();
        for (k, v) in self.raw_iter() {
            match k.cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Some(v),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// The value under `key` as a slice of the metadata's buffer (no copy), if any.
    pub fn get_bytes(&self, key: &str) -> Option<Bytes> {
        self.get(key).map(|v| self.wire.slice_ref(v))
    }

    /// The entries in ascending key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        // Keys were checked as UTF-8 when the metadata was built or decoded.
        self.raw_iter()
            .map(|(k, v)| (std::str::from_utf8(k).unwrap_or_default(), v))
    }

    fn raw_iter(&self) -> Entries<'_> {
        Entries {
            rest: self.wire.get(COUNT_LEN..).unwrap_or_default(),
        }
    }

    /// Sets `key` to `value`, replacing a value it had.
    ///
    /// # Errors
    /// An empty key, a key over [`MAX_METADATA_KEY_LEN`] bytes, a value over
    /// [`MAX_METADATA_VALUE_LEN`] bytes, or a 65 536th entry. The metadata is then unchanged.
    pub fn insert(&mut self, key: &str, value: impl AsRef<[u8]>) -> Result<(), MetadataError> {
        let value = value.as_ref();
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if key.len() > MAX_METADATA_KEY_LEN {
            return Err(MetadataError::KeyTooLong { len: key.len() });
        }
        if value.len() > MAX_METADATA_VALUE_LEN {
            return Err(MetadataError::ValueTooLong {
                key: key.to_owned(),
                len: value.len(),
            });
        }
        let replaced = self.get(key).is_some();
        let count = self.len() + usize::from(!replaced);
        let Ok(count16) = u16::try_from(count) else {
            return Err(MetadataError::TooManyEntries {
                count,
                limit: usize::from(u16::MAX),
            });
        };
        let mut out = BytesMut::with_capacity(
            self.wire.len().max(COUNT_LEN) + ENTRY_OVERHEAD + key.len() + value.len(),
        );
        out.put_u16(count16);
        let mut placed = false;
        for (k, v) in self.raw_iter() {
            if !placed && k >= key.as_bytes() {
                put_entry(&mut out, key.as_bytes(), value);
                placed = true;
                if k == key.as_bytes() {
                    continue;
                }
            }
            put_entry(&mut out, k, v);
        }
        if !placed {
            put_entry(&mut out, key.as_bytes(), value);
        }
        self.wire = out.freeze();
        Ok(())
    }

    /// The same metadata with `key` set to `value` (see [`insert`](Self::insert)).
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn with(mut self, key: &str, value: impl AsRef<[u8]>) -> Result<Metadata, MetadataError> {
        self.insert(key, value)?;
        Ok(self)
    }

    /// The wire form (empty for no entries).
    pub(crate) fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// Checks a received block (the bytes after the `METADATA` flag's fields start, up to
    /// wherever the block ends) and splits it off: returns the metadata and the bytes it took.
    /// Only compares declared lengths with the bytes present; allocates nothing.
    pub(crate) fn split_wire(input: &Bytes) -> Result<(Metadata, usize), WireFault> {
        let count = match input.first_chunk::<COUNT_LEN>() {
            Some(c) => usize::from(u16::from_be_bytes(*c)),
            None => return Err(WireFault::Length),
        };
        if count == 0 {
            return Err(WireFault::Field);
        }
        let mut pos = COUNT_LEN;
        let mut prev: Option<&[u8]> = None;
        for _ in 0..count {
            let key_len = usize::from(*input.get(pos).ok_or(WireFault::Length)?);
            if key_len == 0 {
                return Err(WireFault::Field);
            }
            let key = input
                .get(pos + 1..pos + 1 + key_len)
                .ok_or(WireFault::Length)?;
            if std::str::from_utf8(key).is_err() || prev.is_some_and(|p| p >= key) {
                return Err(WireFault::Field);
            }
            pos += 1 + key_len;
            let len = input
                .get(pos..)
                .and_then(|r| r.first_chunk::<2>())
                .ok_or(WireFault::Length)?;
            let value_len = usize::from(u16::from_be_bytes(*len));
            pos += 2;
            if input.len() - pos < value_len {
                return Err(WireFault::Length);
            }
            pos += value_len;
            prev = Some(key);
        }
        Ok((
            Metadata {
                wire: input.slice(..pos),
            },
            pos,
        ))
    }
}

/// What is wrong with a received metadata block, for the frame decoder to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireFault {
    /// A length runs past the body.
    Length,
    /// A count of 0, an empty or non-UTF-8 key, or keys out of order (or repeated).
    Field,
}

fn put_entry(out: &mut BytesMut, key: &[u8], value: &[u8]) {
    // Both lengths were checked against their fields when the entry was inserted or decoded.
    out.put_u8(u8::try_from(key.len()).unwrap_or(0));
    out.put_slice(key);
    out.put_u16(u16::try_from(value.len()).unwrap_or(0));
    out.put_slice(value);
}

/// Walks well-formed entries (checked when built or decoded).
struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&key_len, rest) = self.rest.split_first()?;
        let key = rest.get(..usize::from(key_len))?;
        let rest = rest.get(usize::from(key_len)..)?;
        let len = usize::from(u16::from_be_bytes(*rest.first_chunk::<2>()?));
        let value = rest.get(2..2 + len)?;
        self.rest = rest.get(2 + len..)?;
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_keeps_keys_sorted_and_unique() {
        let mut md = Metadata::new();
        assert!(md.is_empty());
        md.insert("b", "2").expect("ok");
        md.insert("a", "1").expect("ok");
        md.insert("c", "3").expect("ok");
        md.insert("b", "two").expect("ok");
        let all: Vec<(&str, &[u8])> = md.iter().collect();
        assert_eq!(
            all,
            [("a", &b"1"[..]), ("b", &b"two"[..]), ("c", &b"3"[..])]
        );
        assert_eq!(md.len(), 3);
        assert_eq!(md.data_len(), 3 + 5);
        assert_eq!(md.encoded_len(), 2 + 3 * 3 + 3 + 5);
    }

    #[test]
    fn bad_entries_are_refused_and_leave_the_metadata_unchanged() {
        let mut md = Metadata::new().with("k", "v").expect("ok");
        let before = md.clone();
        assert_eq!(md.insert("", "x"), Err(MetadataError::EmptyKey));
        let long = "k".repeat(256);
        assert_eq!(
            md.insert(&long, "x"),
            Err(MetadataError::KeyTooLong { len: 256 })
        );
        let big = vec![0u8; 65_536];
        assert!(matches!(
            md.insert("k2", &big),
            Err(MetadataError::ValueTooLong { len: 65_536, .. })
        ));
        assert_eq!(md, before);
    }

    #[test]
    fn a_block_round_trips_and_bad_blocks_are_refused() {
        let md = Metadata::new()
            .with("a", [0xffu8, 0])
            .and_then(|m| m.with("z", ""))
            .expect("ok");
        let mut wire = BytesMut::from(&md.wire()[..]);
        wire.put_slice(b"payload");
        let wire = wire.freeze();
        let (back, used) = Metadata::split_wire(&wire).expect("well formed");
        assert_eq!(back, md);
        assert_eq!(&wire[used..], b"payload");

        let bad: &[(&[u8], WireFault)] = &[
            (&[0, 0], WireFault::Field),                               // count 0
            (&[0], WireFault::Length),                                 // no count
            (&[0, 1, 0, 0, 0], WireFault::Field),                      // empty key
            (&[0, 1, 1, b'a', 0], WireFault::Length),                  // value length cut
            (&[0, 1, 1, b'a', 0, 2, 1], WireFault::Length),            // value cut
            (&[0, 1, 1, 0xff, 0, 0], WireFault::Field),                // key not UTF-8
            (&[0, 2, 1, b'b', 0, 0, 1, b'a', 0, 0], WireFault::Field), // unordered
            (&[0, 2, 1, b'a', 0, 0, 1, b'a', 0, 0], WireFault::Field), // duplicate
            (&[0, 2, 1, b'a', 0, 0], WireFault::Length),               // second entry missing
        ];
        for (bytes, fault) in bad {
            assert_eq!(
                Metadata::split_wire(&Bytes::copy_from_slice(bytes)).map(|_| ()),
                Err(*fault),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn debug_shows_keys_not_values() {
        let md = Metadata::new().with("token", "s3cret").expect("ok");
        let shown = format!("{md:?}");
        assert_eq!(shown, r#"{"token": <6 bytes>}"#);
    }

    #[test]
    fn limits_count_entries_and_key_and_value_bytes() {
        let md = Metadata::new()
            .with("ab", "cde")
            .and_then(|m| m.with("f", ""))
            .expect("ok");
        let ok = MetadataLimits {
            entries: 2,
            bytes: 6,
        };
        assert_eq!(ok.check(&md), Ok(()));
        let few = MetadataLimits { entries: 1, ..ok };
        assert_eq!(
            few.check(&md),
            Err(MetadataError::TooManyEntries { count: 2, limit: 1 })
        );
        let small = MetadataLimits { bytes: 5, ..ok };
        assert_eq!(
            small.check(&md),
            Err(MetadataError::TooLarge { bytes: 6, limit: 5 })
        );
    }
}
