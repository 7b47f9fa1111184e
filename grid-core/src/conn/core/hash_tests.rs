//! What a peer can make the calls table do by choosing which of our calls it answers: it sees
//! every mux id we allocate and decides which calls stay pending (until their deadline), so it
//! decides which keys `calls` holds, and then names ids of its choosing in its frames.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::{CallsHasher, Generations};
use crate::ids::MuxId;
use crate::mux::Role;

thread_local! {
    static COMPARES: Cell<usize> = const { Cell::new(0) };
}

/// A mux id that hashes as one and counts the table's key comparisons. The table compares
/// keys only in the slots it probes whose tag (7 bits of the hash) matches the wanted key's,
/// so with equal tags the count is the number of slots probed.
#[derive(Clone, Copy)]
struct Counted(MuxId);

impl Hash for Counted {
    fn hash<S: Hasher>(&self, state: &mut S) {
        self.0.hash(state);
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        COMPARES.with(|c| c.set(c.get() + 1));
        self.0 == other.0
    }
}

impl Eq for Counted {}

fn compares() -> usize {
    COMPARES.with(Cell::get)
}

/// The hash a peer computes for one of our ids from the one-multiply formula in the source
/// (the one generations use, which the calls table used too).
fn public_hash(mux: MuxId) -> u64 {
    let mut h = Generations::default();
    h.write_u64(u64::from(mux.0));
    h.finish()
}

#[test]
fn a_peer_that_picks_which_calls_to_answer_cannot_lengthen_lookups_of_ids_it_names() {
    // The peer leaves pending only our calls whose id has, by the formula, the low 12 bits of
    // the first one's hash (one home slot in any table of up to 4096 slots) and its top 7 bits
    // (its tag); it answers every other call at once. The tag is only what makes the probe
    // count visible here: without it the probes are the same, counted in groups.
    const KEPT: usize = 256;
    const NAMED: usize = 64;
    let first = Role::Dialer.first_id();
    let want = public_hash(MuxId(first));
    let candidates: Vec<MuxId> = (0u32..1 << 20)
        .map(|j| MuxId(first + (j << 12)))
        .filter(|&m| {
            let h = public_hash(m);
            h & 0xfff == want & 0xfff && h >> 57 == want >> 57
        })
        .take(KEPT + NAMED)
        .collect();
    assert_eq!(
        candidates.len(),
        KEPT + NAMED,
        "not enough ids for the test"
    );
    let (kept, named) = candidates.split_at(KEPT);

    let mut calls: HashMap<Counted, (), CallsHasher> = HashMap::default();
    for &m in kept {
        calls.insert(Counted(m), ());
    }
    // The counter counts: finding a key that is there takes at least one comparison.
    let before = compares();
    assert!(calls.contains_key(&Counted(kept[KEPT - 1])));
    assert!(compares() > before);

    // Then every frame the peer sends for one of `named` (a response, an error, credits, a
    // chunk) looks up an id that is not there.
    let before = compares();
    for &m in named {
        assert!(!calls.contains_key(&Counted(m)));
    }
    let spent = compares() - before;
    assert!(
        spent <= NAMED,
        "{NAMED} lookups of absent ids compared {spent} keys ({} a lookup, of {KEPT} pending calls)",
        spent / NAMED
    );
}
