//! Handler tables: the handlers (and subroutes) a node serves, as it announces them to a peer
//! (`PROTOCOL.md` section 9).
//!
//! Each side of a connection tells the other what it serves: the first part of its table in the
//! handshake (the dialer's in its `Confirm`, the acceptor's in its `Ready`), the rest, and every
//! handler registered later, in `Handlers` frames. The receiver keeps what it was told in a
//! [`HandlerTable`]; [`Connection::supports`](crate::Connection::supports) answers from it, and
//! while the table is *complete* a call to a route missing from it fails at once with
//! `UnknownHandler`, without a frame sent.
//!
//! **Complete** is the sender's promise that it serves nothing it has not announced. A node
//! started not ready ([`ManagerBuilder::start_not_ready`](crate::ManagerBuilder::start_not_ready))
//! registers its handlers before it takes any peer, so it makes that promise. A node that is ready
//! at once may register a handler at any moment: a peer that failed a call to it locally because
//! the update was still on its way would refuse a call that, sent, would have arrived after the
//! registration. Its table is announced all the same, but incomplete: routes missing from it are
//! [`Supported::Unknown`], and calls to them go out as they always did.
//!
//! # Wire form
//!
//! ```text
//!  message := flags u8 | group*                   (groups back to back, to the end)
//!  flags   := 0x01 COMPLETE; the other bits are reserved (0)
//!  group   := sublen u8 | subroute (sublen bytes; 0: handlers without a subroute)
//!             | count u16 (>= 1) | count x handler u32 (!= 0, strictly ascending)
//! ```
//!
//! Groups come in strictly ascending order of their subroute bytes, so the group without a
//! subroute comes first and a set of routes has exactly one encoding. Across the messages of one
//! connection a table only grows: every update adds at least one route, no route is announced
//! twice, and `COMPLETE`, once received, holds for the rest of the connection (a table too large
//! for one message is sent in parts, the last one carrying `COMPLETE`).
//!
//! # Bounds
//!
//! A peer can make this node hold at most [`MAX_TABLE_ENTRIES`] routes of at most
//! [`MAX_TABLE_BYTES`] per connection, and since every update adds a route, it can send at most
//! that many updates over a connection's life; checking a message costs at most one step per route
//! it may still add, however long the message is. Subroute names are copied out of the message,
//! so a table never pins a received batch in memory. Registration has the same bounds, so an
//! honest node never announces more than its peers accept.
//!
//! No IO and no clock here: the handshake and the connection core call these functions.

use std::collections::{HashMap, HashSet};
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{Route, MAX_SUBROUTE_LEN};
use crate::ids::HandlerId;

/// Most routes (handler and subroute pairs) one peer's table may hold. Stops a member from making
/// this node hold, and look through, an unbounded table; also the most updates a peer can send
/// over one connection. Registration refuses a route beyond it.
pub const MAX_TABLE_ENTRIES: usize = 16_384;

/// Most bytes one peer's table may hold, counted as [`route_cost`] per route (its id and its
/// subroute name): 1 MiB. Stops a member from filling the table with long subroute names.
/// Registration refuses a route beyond it.
pub const MAX_TABLE_BYTES: usize = 1 << 20;

/// Largest table message a node puts in its handshake record (`Confirm` or `Ready`), which must
/// stay within the handshake's 4096-byte record limit. What does not fit follows in `Handlers`
/// frames.
pub const MAX_HANDSHAKE_TABLE_LEN: usize = 3072;

/// The message flag saying the sender's table is complete (see the module doc).
pub const COMPLETE: u8 = 0x01;

/// Bytes of a group header without its subroute name: the name's length and the id count.
const GROUP_HEADER_LEN: usize = 3;

/// What one route counts against [`MAX_TABLE_BYTES`]: its 4-byte id and its subroute name.
pub const fn route_cost(subroute_len: usize) -> usize {
    4 + subroute_len
}

/// The most bytes one route can take in a message: a group of its own.
const fn worst_len(subroute_len: usize) -> usize {
    GROUP_HEADER_LEN + subroute_len + 4
}

/// Whether a peer serves a route, as far as this node knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Supported {
    /// The peer announced it.
    Yes,
    /// The peer's table is complete and lacks it: a call fails at once with
    /// [`Error::UnknownHandler`](crate::Error::UnknownHandler), and nothing is sent.
    No,
    /// Not known: no live connection, a peer of an older version (it announces no table), or a
    /// peer whose table is incomplete and lacks the route. A call goes out and the peer answers.
    Unknown,
}

/// Why a table message was refused. From a peer, any of these is a protocol violation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// A message without its flags byte.
    #[error("a handler table message without its flags byte")]
    Empty,
    /// Reserved flag bits set.
    #[error("reserved handler table flags {0:#04x} set")]
    Flags(u8),
    /// A group's header or ids run past the end of the message.
    #[error("handler table group truncated: {needed} bytes needed, {available} left")]
    Truncated {
        /// Bytes the group needs from its start.
        needed: usize,
        /// Bytes left in the message from there.
        available: usize,
    },
    /// A group with no handler ids.
    #[error("a handler table group with no handlers")]
    EmptyGroup,
    /// Handler id 0, which names no handler.
    #[error("handler id 0 in a handler table")]
    ZeroHandler,
    /// A subroute name over 255 bytes (only an encoder can meet one).
    #[error("a subroute of {0} bytes (at most 255)")]
    SubrouteTooLong(usize),
    /// Groups, or ids inside a group, not in strictly ascending order.
    #[error("handler table groups or ids out of order")]
    Unordered,
    /// A route the sender had already announced.
    #[error("handler {handler} (subroute {subroute:?}) announced twice")]
    Duplicate {
        /// The handler.
        handler: HandlerId,
        /// Its subroute, escaped for a log line.
        subroute: Option<String>,
    },
    /// An update that adds no route.
    #[error("a handler table update that adds nothing")]
    EmptyUpdate,
    /// More routes than `MAX_TABLE_ENTRIES` (16 384).
    #[error("a handler table of more than {limit} routes")]
    TooManyEntries {
        /// The bound.
        limit: usize,
    },
    /// More bytes than `MAX_TABLE_BYTES` (1 MiB).
    #[error("a handler table of more than {limit} bytes")]
    TooManyBytes {
        /// The bound.
        limit: usize,
    },
}

/// The routes one node announced to its peer on one connection.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HandlerTable {
    routes: HashMap<HandlerId, Routes>,
    entries: usize,
    bytes: usize,
    complete: bool,
}

/// The routes of one handler id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Routes {
    /// Served without a subroute.
    plain: bool,
    /// Served under these subroutes.
    subroutes: HashSet<Box<[u8]>>,
}

impl fmt::Debug for HandlerTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerTable")
            .field("routes", &self.entries)
            .field("bytes", &self.bytes)
            .field("complete", &self.complete)
            .finish()
    }
}

impl HandlerTable {
    /// The table a handshake announced: one message, which may be empty (flags only).
    ///
    /// # Errors
    /// A [`TableError`] for a message that is not canonical or breaks a bound.
    pub fn decode(message: &[u8]) -> Result<HandlerTable, TableError> {
        let mut table = HandlerTable::default();
        table.add(message)?;
        Ok(table)
    }

    /// Adds the routes of an update (a `Handlers` frame's body). The table is unchanged when the
    /// update is refused.
    ///
    /// # Errors
    /// A [`TableError`] for a message that is not canonical, adds nothing, repeats a route or
    /// takes the table past a bound.
    pub fn apply(&mut self, update: &[u8]) -> Result<(), TableError> {
        match self.add(update)? {
            0 => Err(TableError::EmptyUpdate),
            _ => Ok(()),
        }
    }

    /// Checks a message against this table, then adds its routes; returns how many.
    fn add(&mut self, message: &[u8]) -> Result<usize, TableError> {
        let (&flags, body) = message.split_first().ok_or(TableError::Empty)?;
        if flags & !COMPLETE != 0 {
            return Err(TableError::Flags(flags & !COMPLETE));
        }
        // First pass: everything is checked before anything changes. It stops at the first
        // route past a bound, so its cost is bounded by the table's bounds, not by the message.
        let (mut entries, mut bytes) = (self.entries, self.bytes);
        for group in Groups::new(body) {
            let (subroute, ids) = group?;
            let mut prev = 0u32;
            for id in ids_of(ids) {
                if id == 0 {
                    return Err(TableError::ZeroHandler);
                }
                if id <= prev {
                    return Err(TableError::Unordered);
                }
                prev = id;
                let handler = HandlerId(id);
                if self.contains(handler, subroute) {
                    return Err(TableError::Duplicate {
                        handler,
                        subroute: subroute.map(|s| s.escape_ascii().to_string()),
                    });
                }
                entries += 1;
                bytes += route_cost(subroute.map_or(0, <[u8]>::len));
                if entries > MAX_TABLE_ENTRIES {
                    return Err(TableError::TooManyEntries {
                        limit: MAX_TABLE_ENTRIES,
                    });
                }
                if bytes > MAX_TABLE_BYTES {
                    return Err(TableError::TooManyBytes {
                        limit: MAX_TABLE_BYTES,
                    });
                }
            }
        }
        // Second pass, over a message known to be good.
        for (subroute, ids) in Groups::new(body).flatten() {
            for id in ids_of(ids) {
                let routes = self.routes.entry(HandlerId(id)).or_default();
                match subroute {
                    None => routes.plain = true,
                    Some(s) => {
                        routes.subroutes.insert(Box::from(s));
                    }
                }
            }
        }
        let added = entries - self.entries;
        self.entries = entries;
        self.bytes = bytes;
        self.complete |= flags & COMPLETE != 0;
        Ok(added)
    }

    /// True when the table holds `handler` under `subroute` (`None`: without a subroute). The
    /// names compare as bytes.
    pub fn contains(&self, handler: HandlerId, subroute: Option<&[u8]>) -> bool {
        self.routes.get(&handler).is_some_and(|r| match subroute {
            None => r.plain,
            Some(s) => r.subroutes.contains(s),
        })
    }

    /// Whether the peer serves `route`, as this table tells.
    pub fn supports(&self, route: &Route) -> Supported {
        if self.contains(route.handler, route.subroute.as_deref()) {
            Supported::Yes
        } else if self.complete {
            Supported::No
        } else {
            Supported::Unknown
        }
    }

    /// True when the table is complete and lacks `route`: a call to it must fail at once. Looks
    /// the route up only in a complete table, so a call to a peer whose table is incomplete pays
    /// nothing for the check.
    pub fn lacks(&self, route: &Route) -> bool {
        self.complete && !self.contains(route.handler, route.subroute.as_deref())
    }

    /// True once the sender said its table is complete.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when the table holds no route.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Every route, sorted by subroute (none first), then id: the order of the wire form.
    pub fn routes(&self) -> Vec<Route> {
        let mut all: Vec<(&[u8], HandlerId)> = Vec::with_capacity(self.entries);
        for (id, r) in &self.routes {
            if r.plain {
                all.push((&[], *id));
            }
            all.extend(r.subroutes.iter().map(|s| (&s[..], *id)));
        }
        all.sort_unstable();
        all.into_iter()
            .map(|(s, handler)| Route {
                handler,
                subroute: (!s.is_empty()).then(|| Bytes::copy_from_slice(s)),
            })
            .collect()
    }
}

/// The groups of a message body, each checked for its layout and its order after the one before.
struct Groups<'a> {
    rest: &'a [u8],
    /// The previous group's subroute (empty for none), once there was one.
    prev: Option<&'a [u8]>,
    failed: bool,
}

impl<'a> Groups<'a> {
    fn new(body: &'a [u8]) -> Groups<'a> {
        Groups {
            rest: body,
            prev: None,
            failed: false,
        }
    }

    fn group(&mut self) -> Result<(Option<&'a [u8]>, &'a [u8]), TableError> {
        let rest = self.rest;
        let truncated = |needed| TableError::Truncated {
            needed,
            available: rest.len(),
        };
        let sublen = usize::from(*rest.first().ok_or(truncated(1))?);
        let header = 1 + sublen + 2;
        let (head, tail) = rest.split_at_checked(header).ok_or(truncated(header))?;
        let subroute = &head[1..1 + sublen];
        let count = usize::from(u16::from_be_bytes([head[header - 2], head[header - 1]]));
        if count == 0 {
            return Err(TableError::EmptyGroup);
        }
        let (ids, tail) = tail
            .split_at_checked(count * 4)
            .ok_or(truncated(header + count * 4))?;
        if self.prev.is_some_and(|p| subroute <= p) {
            return Err(TableError::Unordered);
        }
        self.prev = Some(subroute);
        self.rest = tail;
        Ok(((!subroute.is_empty()).then_some(subroute), ids))
    }
}

impl<'a> Iterator for Groups<'a> {
    type Item = Result<(Option<&'a [u8]>, &'a [u8]), TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let group = self.group();
        self.failed = group.is_err();
        Some(group)
    }
}

/// The ids of a group, from bytes whose length is a multiple of 4.
fn ids_of(ids: &[u8]) -> impl Iterator<Item = u32> + '_ {
    ids.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// The canonical message announcing exactly `routes` (in any order; repeats count once).
///
/// # Errors
/// [`TableError::ZeroHandler`], [`TableError::SubrouteTooLong`] for an empty or over-long
/// subroute, or a bound ([`TableError::TooManyEntries`], [`TableError::TooManyBytes`]).
pub fn encode(routes: &[Route], complete: bool) -> Result<Bytes, TableError> {
    let mut items: Vec<(&[u8], u32)> = Vec::with_capacity(routes.len());
    for r in routes {
        if r.handler.0 == 0 {
            return Err(TableError::ZeroHandler);
        }
        let sub = r.subroute.as_deref().unwrap_or_default();
        if r.subroute.is_some() && (sub.is_empty() || sub.len() > MAX_SUBROUTE_LEN) {
            return Err(TableError::SubrouteTooLong(sub.len()));
        }
        items.push((sub, r.handler.0));
    }
    items.sort_unstable();
    items.dedup();
    if items.len() > MAX_TABLE_ENTRIES {
        return Err(TableError::TooManyEntries {
            limit: MAX_TABLE_ENTRIES,
        });
    }
    if items
        .iter()
        .map(|(s, _)| route_cost(s.len()))
        .sum::<usize>()
        > MAX_TABLE_BYTES
    {
        return Err(TableError::TooManyBytes {
            limit: MAX_TABLE_BYTES,
        });
    }
    Ok(write(items, complete))
}

/// Writes sorted, distinct `(subroute, id)` items (empty subroute: none) as one message. The
/// callers keep them within the bounds, so a group's count fits its `u16`.
fn write(items: Vec<(&[u8], u32)>, complete: bool) -> Bytes {
    let len = 1 + items.iter().map(|(s, _)| worst_len(s.len())).sum::<usize>();
    let mut buf = BytesMut::with_capacity(len);
    buf.put_u8(if complete { COMPLETE } else { 0 });
    let mut groups = items.chunk_by(|a, b| a.0 == b.0);
    for group in groups.by_ref() {
        let sub = group[0].0;
        buf.put_u8(u8::try_from(sub.len()).unwrap_or(u8::MAX));
        buf.put_slice(sub);
        buf.put_u16(u16::try_from(group.len()).unwrap_or(u16::MAX));
        for (_, id) in group {
            buf.put_u32(*id);
        }
    }
    buf.freeze()
}

/// One registration as the local node announces it: a handler id and its subroute, if any.
pub(crate) type Entry = (HandlerId, Option<Box<str>>);

/// What this node serves, in the order it was registered; the connection core reads it to tell
/// each peer (the handler registry implements it).
pub(crate) trait LocalTable {
    /// The registrations from position `from` on. The list only grows.
    fn entries_since(&self, from: usize) -> Vec<Entry>;
    /// Whether this node promises its peers that it serves nothing it has not announced.
    fn is_complete(&self) -> bool;
}

/// The message announcing the longest prefix of `entries` that fits in `max_len` bytes, and the
/// length of that prefix. `COMPLETE` is set only when `complete` and the whole of `entries` fit,
/// so a table sent in parts is complete only with its last part. Returns a prefix of 0 when not
/// even the first entry fits.
pub(crate) fn encode_prefix(entries: &[Entry], complete: bool, max_len: usize) -> (Bytes, usize) {
    let mut len = 1;
    let mut n = 0;
    for (_, sub) in entries {
        let w = worst_len(sub.as_ref().map_or(0, |s| s.len()));
        if len + w > max_len {
            break;
        }
        len += w;
        n += 1;
    }
    let mut items: Vec<(&[u8], u32)> = entries[..n]
        .iter()
        .map(|(id, sub)| (sub.as_deref().map_or(&[][..], str::as_bytes), id.0))
        .collect();
    items.sort_unstable();
    items.dedup();
    (write(items, complete && n == entries.len()), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: u32, sub: Option<&'static str>) -> Route {
        Route {
            handler: HandlerId(id),
            subroute: sub.map(|s| Bytes::from_static(s.as_bytes())),
        }
    }

    #[test]
    fn table_encoding_is_canonical_and_round_trips() {
        let routes = [
            route(7, Some("disk2")),
            route(9, None),
            route(3, Some("disk1")),
            route(2, None),
            route(7, Some("disk1")),
            route(2, None),
        ];
        let msg = encode(&routes, true).expect("valid routes");
        assert_eq!(
            hex::encode(&msg),
            "01\
             00 0002 00000002 00000009\
             05 6469736b31 0002 00000003 00000007\
             05 6469736b32 0001 00000007"
                .replace(' ', "")
        );
        let table = HandlerTable::decode(&msg).expect("decodes");
        assert!(table.is_complete());
        assert_eq!(table.len(), 5);
        let mut want: Vec<Route> = routes[..5].to_vec();
        want.sort_by(|a, b| {
            (a.subroute.as_deref().unwrap_or_default(), a.handler)
                .cmp(&(b.subroute.as_deref().unwrap_or_default(), b.handler))
        });
        assert_eq!(table.routes(), want);
        assert_eq!(encode(&table.routes(), true).expect("valid"), msg);
    }

    #[test]
    fn table_lookup_distinguishes_subroutes() {
        let msg = encode(&[route(5, None), route(6, Some("a"))], false).expect("valid");
        let table = HandlerTable::decode(&msg).expect("decodes");
        assert!(table.contains(HandlerId(5), None));
        assert!(!table.contains(HandlerId(5), Some(b"a")));
        assert!(table.contains(HandlerId(6), Some(b"a")));
        assert!(!table.contains(HandlerId(6), None));
        assert_eq!(table.supports(&route(6, Some("a"))), Supported::Yes);
        // Incomplete: what is missing is unknown, not absent.
        assert_eq!(table.supports(&route(6, Some("b"))), Supported::Unknown);
        let complete = HandlerTable::decode(&encode(&[route(5, None)], true).expect("valid"))
            .expect("decodes");
        assert_eq!(complete.supports(&route(6, None)), Supported::No);
        // What fails fast: only a route a complete table lacks.
        assert!(complete.lacks(&route(6, None)));
        assert!(!complete.lacks(&route(5, None)));
        assert!(!table.lacks(&route(6, Some("b"))));
    }

    #[test]
    fn table_updates_add_and_complete_sticks() {
        let mut table = HandlerTable::decode(&[0]).expect("an empty table");
        assert!(table.is_empty() && !table.is_complete());
        assert_eq!(table.apply(&[0]), Err(TableError::EmptyUpdate));
        let update = encode(&[route(1, None)], true).expect("valid");
        table.apply(&update).expect("adds");
        assert!(table.is_complete());
        // A later update without the flag does not take the promise back.
        table
            .apply(&encode(&[route(2, None)], false).expect("valid"))
            .expect("adds");
        assert!(table.is_complete() && table.len() == 2);
        // Announcing a route twice is refused, and leaves the table as it was.
        let again = encode(&[route(3, None), route(1, None)], false).expect("valid");
        let before = table.clone();
        assert_eq!(
            table.apply(&again),
            Err(TableError::Duplicate {
                handler: HandlerId(1),
                subroute: None
            })
        );
        assert_eq!(table, before);
    }

    #[test]
    fn malformed_table_messages_are_refused_with_their_reason() {
        let cases: [(&str, &str, TableError); 9] = [
            ("", "no flags byte", TableError::Empty),
            ("02", "reserved flag", TableError::Flags(0x02)),
            (
                "00 00 00",
                "a group header cut short",
                TableError::Truncated {
                    needed: 3,
                    available: 2,
                },
            ),
            (
                "00 00 0002 00000001",
                "fewer ids than counted",
                TableError::Truncated {
                    needed: 11,
                    available: 7,
                },
            ),
            ("00 00 0000", "an empty group", TableError::EmptyGroup),
            ("00 00 0001 00000000", "handler 0", TableError::ZeroHandler),
            (
                "00 00 0002 00000002 00000001",
                "ids out of order",
                TableError::Unordered,
            ),
            (
                "00 00 0002 00000001 00000001",
                "an id twice",
                TableError::Unordered,
            ),
            (
                "00 0162 0001 00000001 0161 0001 00000001",
                "groups out of order",
                TableError::Unordered,
            ),
        ];
        for (hex_msg, what, want) in cases {
            let msg = hex::decode(hex_msg.replace(' ', "")).expect("hex");
            assert_eq!(HandlerTable::decode(&msg), Err(want), "{what}");
        }
        // The group without a subroute must come first, and only once.
        let msg =
            hex::decode("00 0161 0001 00000001 00 0001 00000001".replace(' ', "")).expect("hex");
        assert_eq!(HandlerTable::decode(&msg), Err(TableError::Unordered));
    }

    #[test]
    fn table_bounds_stop_a_peer_early() {
        // One group claiming the most ids a count can, all present: refused at the entry bound.
        let mut msg = vec![0u8, 0, 0xff, 0xff];
        for id in 1..=u32::from(u16::MAX) {
            msg.extend_from_slice(&id.to_be_bytes());
        }
        assert_eq!(
            HandlerTable::decode(&msg),
            Err(TableError::TooManyEntries {
                limit: MAX_TABLE_ENTRIES
            })
        );
        // Exactly at the bound is fine, and then nothing more fits.
        let routes: Vec<Route> = (1..=MAX_TABLE_ENTRIES as u32)
            .map(|id| route(id, None))
            .collect();
        let mut table = HandlerTable::decode(&encode(&routes, false).expect("at the bound"))
            .expect("at the bound");
        assert_eq!(
            table.apply(&encode(&[route(u32::MAX, None)], false).expect("valid")),
            Err(TableError::TooManyEntries {
                limit: MAX_TABLE_ENTRIES
            })
        );
        // Long names reach the byte bound first.
        let long = "x".repeat(255);
        let mut routes = Vec::new();
        for g in 0..((MAX_TABLE_BYTES / route_cost(255)) + 1) {
            routes.push(Route {
                handler: HandlerId(g as u32 + 1),
                subroute: Some(Bytes::from(long.clone())),
            });
        }
        assert_eq!(
            encode(&routes, false),
            Err(TableError::TooManyBytes {
                limit: MAX_TABLE_BYTES
            })
        );
    }

    #[test]
    fn table_prefixes_fit_their_bound_and_complete_only_at_the_end() {
        let entries: Vec<Entry> = (1..=100u32)
            .map(|i| {
                (
                    HandlerId(i),
                    (i % 2 == 0).then(|| format!("disk{i}").into()),
                )
            })
            .collect();
        let mut table = HandlerTable::default();
        let mut done = 0;
        let mut parts = 0;
        while done < entries.len() {
            let (msg, n) = encode_prefix(&entries[done..], true, 256);
            assert!(
                n > 0 && msg.len() <= 256,
                "{n} entries in {} bytes",
                msg.len()
            );
            done += n;
            parts += 1;
            assert_eq!(msg[0] == COMPLETE, done == entries.len());
            table.add(&msg).expect("each part adds");
        }
        assert!(parts > 1 && table.is_complete());
        assert_eq!(table.len(), 100);
        assert!(table.contains(HandlerId(4), Some(b"disk4")));
        assert!(table.contains(HandlerId(3), None));
        // Not even one entry fits: nothing taken.
        assert_eq!(encode_prefix(&entries, true, 4).1, 0);
        // Nothing to announce: an empty table, complete if promised.
        assert_eq!(encode_prefix(&[], true, 16).0.as_ref(), [COMPLETE]);
    }
}
