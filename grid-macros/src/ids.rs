//! Handler ids, derived exactly as `grid_core::HandlerId::from_wire_name` does (FNV-1a, 32 bits,
//! with 0 mapped to 1). Duplicated here so the macro can find duplicate ids at compile time; the
//! unit tests pin known values so the two cannot drift silently.

/// The id of a wire name.
pub(crate) fn from_wire_name(name: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    if hash == 0 {
        1
    } else {
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::from_wire_name;

    #[test]
    fn ids_of_known_wire_names_are_pinned() {
        assert_eq!(from_wire_name(""), 0x811c_9dc5);
        assert_eq!(from_wire_name("a"), 0xe40c_292c);
        assert_eq!(from_wire_name("Locker.lock"), PINNED_LOCK);
        assert_eq!(from_wire_name("Locker.watch"), PINNED_WATCH);
        assert_eq!(from_wire_name("Disk.read"), PINNED_READ);
    }

    const PINNED_LOCK: u32 = 0xb593_7eee;
    const PINNED_WATCH: u32 = 0x12e1_173c;
    const PINNED_READ: u32 = 0x4766_e936;
}
