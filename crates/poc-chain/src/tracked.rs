//! Maps whose contribution to the app hash is maintained incrementally.
//!
//! The PoC collections (commits, votes, distributions, seeds, events, snapshots) grow
//! with every stage and are never pruned, so hashing the whole state after every block
//! makes block execution (and replay) slow down linearly with chain age. A [`Tracked`]
//! map remembers which keys changed; its hash is a two-level list hash:
//!
//! - every entry hashes to `SHA-256(canonical JSON of [key, value])`;
//! - entries are grouped into buckets by their key's leading component (the stage height
//!   or epoch), and a bucket hashes to `SHA-256(count ‖ entry hashes in key order)`;
//! - the map hashes to `SHA-256(count ‖ (bucket id ‖ bucket hash) in bucket order)`.
//!
//! Only changed entries are re-serialised and only changed buckets re-hashed, so a
//! block's hashing cost follows what the block touched plus one 40-byte line per bucket.
//! Reads go through `Deref` to the inner `BTreeMap`; every mutation goes through a method
//! that records the key, so a change can never bypass the hash.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The bucket a key belongs to: its leading component, so a stage's (or an epoch's)
/// entries share one bucket.
pub trait Bucket {
    /// Bucket id.
    fn bucket(&self) -> i128;
}

impl Bucket for i64 {
    fn bucket(&self) -> i128 {
        i128::from(*self)
    }
}
impl Bucket for u64 {
    fn bucket(&self) -> i128 {
        i128::from(*self)
    }
}
impl<B: Copy + Into<i128>> Bucket for (B, String) {
    fn bucket(&self) -> i128 {
        self.0.into()
    }
}
impl<B: Copy + Into<i128>> Bucket for (B, String, String) {
    fn bucket(&self) -> i128 {
        self.0.into()
    }
}
impl Bucket for (u64, u64) {
    fn bucket(&self) -> i128 {
        i128::from(self.0)
    }
}

#[derive(Debug, Clone)]
struct Cache<K> {
    /// Keys changed since the last hash.
    dirty: BTreeSet<K>,
    /// Everything must be rehashed (after deserialisation).
    all_dirty: bool,
    /// Per bucket: entry hashes in key order.
    entries: BTreeMap<i128, BTreeMap<K, [u8; 32]>>,
    /// Per bucket: its hash, `None` when stale.
    buckets: BTreeMap<i128, Option<[u8; 32]>>,
    root: Option<[u8; 32]>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Self {
            dirty: BTreeSet::new(),
            all_dirty: true,
            entries: BTreeMap::new(),
            buckets: BTreeMap::new(),
            root: None,
        }
    }
}

/// A `BTreeMap` whose hash is kept up to date incrementally (see the module docs).
#[derive(Clone)]
pub struct Tracked<K, V> {
    map: BTreeMap<K, V>,
    cache: Cache<K>,
}

impl<K, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            cache: Cache::default(),
        }
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Tracked<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

impl<K, V> Deref for Tracked<K, V> {
    type Target = BTreeMap<K, V>;
    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<'a, K, V> IntoIterator for &'a Tracked<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<K: Ord, V> From<BTreeMap<K, V>> for Tracked<K, V> {
    fn from(map: BTreeMap<K, V>) -> Self {
        Self {
            map,
            cache: Cache::default(),
        }
    }
}

impl<K: Ord + Clone, V> FromIterator<(K, V)> for Tracked<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        BTreeMap::from_iter(iter).into()
    }
}

impl<K: Ord + Clone + Bucket + Serialize, V: Serialize> Tracked<K, V> {
    fn touch(&mut self, k: &K) {
        let c = &mut self.cache;
        if !c.all_dirty {
            c.dirty.insert(k.clone());
        }
        c.root = None;
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.touch(&k);
        self.map.insert(k, v)
    }

    /// Removes.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        if self.map.contains_key(k) {
            self.touch(k);
        }
        self.map.remove(k)
    }

    /// A value to change in place.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        if self.map.contains_key(k) {
            self.touch(k);
        }
        self.map.get_mut(k)
    }

    /// The value at `k`, inserted with `f` when absent, to change in place.
    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        self.touch(&k);
        self.map.entry(k).or_insert_with(f)
    }

    /// Keeps the entries for which `f` holds (read-only: a kept entry is unchanged).
    pub fn retain(&mut self, mut f: impl FnMut(&K, &V) -> bool) {
        let gone: Vec<K> = self
            .map
            .iter()
            .filter(|&(k, v)| !f(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.remove(&k);
        }
    }

    /// Every value, to change in place (all entries are rehashed).
    pub fn values_mut(&mut self) -> std::collections::btree_map::ValuesMut<'_, K, V> {
        let c = &mut self.cache;
        c.all_dirty = true;
        c.root = None;
        self.map.values_mut()
    }

    /// The map's hash (see the module docs), bringing the cached one up to date.
    pub fn hash(&mut self) -> [u8; 32] {
        let c = &mut self.cache;
        if let Some(r) = c.root {
            return r;
        }
        let entry_hash = |k: &K, v: &V| -> [u8; 32] {
            let mut h = Sha256::new();
            serde_json::to_writer(HashWriter(&mut h), &(k, v)).expect("entry serialises");
            h.finalize().into()
        };
        if c.all_dirty {
            c.entries.clear();
            c.buckets.clear();
            for (k, v) in &self.map {
                let b = k.bucket();
                c.entries
                    .entry(b)
                    .or_default()
                    .insert(k.clone(), entry_hash(k, v));
                c.buckets.insert(b, None);
            }
            c.dirty.clear();
            c.all_dirty = false;
        } else {
            let dirty = std::mem::take(&mut c.dirty);
            for k in dirty {
                let b = k.bucket();
                match self.map.get(&k) {
                    Some(v) => {
                        let h = entry_hash(&k, v);
                        c.entries.entry(b).or_default().insert(k, h);
                    }
                    None => {
                        if let Some(e) = c.entries.get_mut(&b) {
                            e.remove(&k);
                            if e.is_empty() {
                                c.entries.remove(&b);
                            }
                        }
                    }
                }
                c.buckets.insert(b, None);
            }
        }
        let stale: Vec<i128> = c
            .buckets
            .iter()
            .filter(|(_, h)| h.is_none())
            .map(|(b, _)| *b)
            .collect();
        for b in stale {
            match c.entries.get(&b) {
                Some(e) => {
                    let mut h = Sha256::new();
                    h.update((e.len() as u64).to_be_bytes());
                    for x in e.values() {
                        h.update(x);
                    }
                    let r: [u8; 32] = h.finalize().into();
                    c.buckets.insert(b, Some(r));
                }
                None => {
                    c.buckets.remove(&b);
                }
            }
        }
        let mut h = Sha256::new();
        h.update((self.map.len() as u64).to_be_bytes());
        for (b, r) in &c.buckets {
            h.update(b.to_be_bytes());
            h.update(r.expect("bucket hashed above"));
        }
        let root: [u8; 32] = h.finalize().into();
        c.root = Some(root);
        root
    }
}

/// Feeds serialised bytes into a hash.
pub(crate) struct HashWriter<'a>(pub(crate) &'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<K, V> Serialize for Tracked<K, V>
where
    K: Ord + Clone + Bucket + Serialize,
    V: Serialize,
    BTreeMap<K, V>: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Tracked<K, V>
where
    BTreeMap<K, V>: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::deserialize(d)?.into())
    }
}

/// `#[serde(with = …)]` for tracked maps with compound keys: `[[k, v], …]` (as
/// [`crate::json::entries`]).
pub mod entries {
    use super::*;

    /// Serialises as `[[k, v], …]`.
    pub fn serialize<K, V, S>(m: &Tracked<K, V>, s: S) -> Result<S::Ok, S::Error>
    where
        K: Serialize,
        V: Serialize,
        S: Serializer,
    {
        crate::json::entries::serialize(&m.map, s)
    }

    /// Parses `[[k, v], …]`.
    pub fn deserialize<'de, K, V, D>(d: D) -> Result<Tracked<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(crate::json::entries::deserialize(d)?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh<K: Ord + Clone + Bucket + Serialize, V: Serialize + Clone>(
        t: &Tracked<K, V>,
    ) -> [u8; 32] {
        Tracked::from(t.map.clone()).hash()
    }

    #[test]
    fn incremental_hash_equals_a_fresh_one_after_every_kind_of_change() {
        let mut t: Tracked<(i64, String), u32> = Tracked::default();
        let empty = t.hash();
        for stage in [10i64, 50, 90] {
            for p in ["a", "b", "c"] {
                t.insert((stage, p.into()), 1);
            }
        }
        assert_eq!(t.hash(), fresh(&t));
        assert_ne!(t.hash(), empty);
        let before = t.hash();
        *t.get_mut(&(50, "b".into())).unwrap() = 7;
        assert_ne!(t.hash(), before);
        assert_eq!(t.hash(), fresh(&t));
        t.remove(&(90, "a".into()));
        assert_eq!(t.hash(), fresh(&t));
        *t.get_or_insert_with((130, "z".into()), || 0) += 5;
        assert_eq!(t.hash(), fresh(&t));
        t.retain(|k, _| k.0 != 10);
        assert_eq!(t.hash(), fresh(&t));
        for v in t.values_mut() {
            *v += 1;
        }
        assert_eq!(t.hash(), fresh(&t));
        let mut c = t.clone();
        t.insert((50, "q".into()), 3);
        assert_ne!(c.hash(), t.hash());
        assert_eq!(c.hash(), fresh(&c));
        for k in c.keys() {
            t.remove(k);
        }
        t.remove(&(50, "q".into()));
        assert_eq!(t.hash(), empty);
    }

    #[test]
    fn serialisation_is_the_plain_map() {
        let mut t: Tracked<u64, String> = Tracked::default();
        t.insert(3, "x".into());
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"3":"x"}"#);
        let mut back: Tracked<u64, String> = serde_json::from_str(r#"{"3":"x"}"#).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.hash(), t.hash());
        // Hashing does not change what the map serialises to.
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"3":"x"}"#);
    }
}
