//! The group keys of one open window: every key's bytes in one arena, and a
//! hash table of group indices into it.
//!
//! A map of boxed keys allocates each key on its own; firing a window then
//! reads thousands of them scattered over the heap (to build the key
//! columns) and frees them one by one. Here the keys sit in first-seen
//! order, end to end, so firing reads one buffer front to back and frees
//! three allocations.

use std::hash::BuildHasher;

use hashbrown::HashTable;

pub(super) struct KeyTable {
    /// Group indices, found by the hash of their key bytes.
    table: HashTable<usize>,
    /// The keys' bytes in group order.
    bytes: Vec<u8>,
    /// `ends[g]`: where group `g`'s key ends in `bytes` (it starts where
    /// `g - 1`'s ends).
    ends: Vec<usize>,
}

fn hash(key: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x6772_6f75).hash_one(key)
}

/// Group `g`'s key: it ends at `ends[g]` and starts where `g - 1`'s ends.
fn key_at<'a>(bytes: &'a [u8], ends: &[usize], g: usize) -> &'a [u8] {
    let start = if g == 0 { 0 } else { ends[g - 1] };
    &bytes[start..ends[g]]
}

impl KeyTable {
    pub(super) fn new() -> Self {
        Self {
            table: HashTable::new(),
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Group `g`'s key bytes.
    pub(super) fn key(&self, g: usize) -> &[u8] {
        key_at(&self.bytes, &self.ends, g)
    }

    /// The group of `key`, a new one (the next index) if it was not seen.
    pub(super) fn group_of(&mut self, key: &[u8]) -> usize {
        let h = hash(key);
        let Self { table, bytes, ends } = self;
        if let Some(&g) = table.find(h, |&g| key_at(bytes, ends, g) == key) {
            return g;
        }
        let g = ends.len();
        table.insert_unique(h, g, |&g| hash(key_at(bytes, ends, g)));
        bytes.extend_from_slice(key);
        ends.push(bytes.len());
        g
    }

    /// Every key's bytes, end to end in group order.
    pub(super) fn arena(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes of all keys.
    pub(super) fn key_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Memory held: the table's slots and control bytes, the arena and the
    /// offsets, at their capacities.
    pub(super) fn size(&self) -> usize {
        let slots = match self.table.capacity() {
            0 => 0,
            // hashbrown keeps at most 7/8 of its power-of-two buckets full.
            cap => (cap * 8 / 7).next_power_of_two(),
        };
        slots * (std::mem::size_of::<usize>() + 1)
            + self.bytes.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_get_groups_in_first_seen_order_and_read_back_whole() {
        let mut t = KeyTable::new();
        let keys: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| i.to_string().into_bytes())
            .chain([Vec::new()]) // the empty key (no keys) is a key too
            .collect();
        for (g, k) in keys.iter().enumerate() {
            assert_eq!(t.group_of(k), g);
        }
        for (g, k) in keys.iter().enumerate().rev() {
            assert_eq!(t.group_of(k), g, "seen again");
            assert_eq!(t.key(g), &k[..]);
        }
        assert_eq!(t.len(), keys.len());
        assert_eq!(t.key_bytes(), keys.iter().map(Vec::len).sum::<usize>());
        assert!(t.size() >= t.key_bytes());
    }
}
