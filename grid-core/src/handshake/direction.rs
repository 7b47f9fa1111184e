//! Which node of a pair dials the other.
//!
//! Both nodes compute the same answer from the two names alone, so exactly one of them dials and
//! the other only accepts: the pair never races two sockets against each other. The rule is part
//! of the protocol (`PROTOCOL.md`, section 7): the acceptor refuses a dial from the wrong side with
//! [`RejectCode::WrongDirection`](super::RejectCode::WrongDirection).
//!
//! "The smaller name dials" would be simpler, but it makes the first node of a sorted cluster dial
//! everyone and the last node dial no one, so the redial work after a network cut lands on a few
//! nodes. Instead a hash of the (ordered) pair picks a side: every node dials about half its peers.
//!
//! The hash is SHA-256 rather than a short non-cryptographic hash because its low bit must look
//! random: FNV-1a's low bit, for one, is just the parity of the input bytes' low bits, which would
//! split the cluster into two classes with a "smaller dials" rule inside each.

use sha2::{Digest, Sha256};

/// The name of the node that dials, of the pair `a`, `b`.
///
/// Names are compared as bytes, exactly as given (no normalization: `http://a:9000` and
/// `http://a:9000/` are different nodes). With `lo` the smaller and `hi` the larger name,
/// `h = SHA-256(lo || "\n" || hi)`; if the lowest bit of `h[0]` is 0, `lo` dials, else `hi`.
/// The result is the same for `(a, b)` and `(b, a)`. For `a == b` it is `a` (a node never
/// connects to itself).
pub fn dialer_of<'a>(a: &'a str, b: &'a str) -> &'a str {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let h = Sha256::new()
        .chain_update(lo.as_bytes())
        .chain_update(b"\n")
        .chain_update(hi.as_bytes())
        .finalize();
    if h[0] & 1 == 0 {
        lo
    } else {
        hi
    }
}

/// True when `local` is the side that dials `remote`; false when it waits for `remote` to dial
/// (and false when `local == remote`).
pub fn should_dial(local: &str, remote: &str) -> bool {
    local != remote && dialer_of(local, remote) == local
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_name(rng: &mut fastrand::Rng) -> String {
        let len = rng.usize(1..24);
        (0..len).map(|_| rng.alphanumeric()).collect()
    }

    #[test]
    fn handshake_direction_is_antisymmetric_on_random_pairs() {
        let mut rng = fastrand::Rng::with_seed(0x6772_6964);
        for _ in 0..20_000 {
            let a = random_name(&mut rng);
            let b = random_name(&mut rng);
            if a == b {
                continue;
            }
            assert_eq!(dialer_of(&a, &b), dialer_of(&b, &a), "{a} {b}");
            assert!(
                should_dial(&a, &b) ^ should_dial(&b, &a),
                "exactly one of {a} and {b} must dial"
            );
        }
    }

    #[test]
    fn handshake_direction_with_equal_strings_in_different_buffers() {
        let a = String::from("http://10.0.0.1:9000");
        let b = String::from("http://10.0.0.2:9000");
        let a2 = a.clone();
        assert_eq!(should_dial(&a, &b), should_dial(&a2, &b));
        assert!(!should_dial(&a, &a2));
    }

    #[test]
    fn handshake_direction_spreads_dial_duty_in_a_mesh() {
        let names: Vec<String> = (1..=16)
            .map(|i| format!("http://10.0.0.{i}:9000"))
            .collect();
        let mut total = 0;
        for local in &names {
            let dials = names
                .iter()
                .filter(|remote| should_dial(local, remote))
                .count();
            // 15 peers each: a fair coin gives 7.5 on average; "smaller dials" would give 0..=15.
            assert!((4..=11).contains(&dials), "{local} dials {dials} of 15");
            total += dials;
        }
        assert_eq!(total, 16 * 15 / 2, "every pair is dialed exactly once");
    }

    #[test]
    fn handshake_direction_is_pinned() {
        // The rule is part of the wire protocol (PROTOCOL.md §7): pin a few answers.
        assert_eq!(
            dialer_of("http://10.0.0.1:9000", "http://10.0.0.2:9000"),
            "http://10.0.0.1:9000"
        );
        assert_eq!(dialer_of("a", "b"), "a");
        assert_eq!(dialer_of("b", "a"), "a");
        assert_eq!(dialer_of("x", "x"), "x");
    }
}
