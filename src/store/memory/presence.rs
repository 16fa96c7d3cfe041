//! [`Presence`] for the memory backend: the presence sets, which drop expired members
//! lazily.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Inner, MemoryStore};
use crate::store::{Presence, StoreResult};

/// The members of one presence set with their expiry times.
///
/// Every viewer's connection touches its set when it joins and again every `ttl / 3`, so
/// a touch must not scan the set: expired members are dropped only when a count or list
/// needs it and something can have expired since the last scan (`earliest`), which in a
/// steady state is about once per refresh period instead of once per touch.
#[derive(Default)]
pub(super) struct PresenceSet {
    pub(super) members: HashMap<String, Instant>,
    /// No member expires before this (exact right after a scan, a lower bound after
    /// touches and removals); `None` when the set has been empty since the last scan.
    earliest: Option<Instant>,
}

impl PresenceSet {
    /// Drops expired members, if any can have expired.
    pub(super) fn sweep(&mut self, now: Instant) {
        if self.earliest.is_none_or(|e| e > now) {
            return;
        }
        self.members.retain(|_, exp| *exp > now);
        self.earliest = self.members.values().min().copied();
    }

    /// Marks `member` present until `exp`; returns whether it was absent (never there,
    /// removed, or expired).
    fn touch(&mut self, member: &str, exp: Instant, now: Instant) -> bool {
        self.earliest = Some(self.earliest.map_or(exp, |e| e.min(exp)));
        match self.members.get_mut(member) {
            Some(old) => {
                let was_live = *old > now;
                *old = exp;
                !was_live
            }
            None => {
                self.members.insert(member.to_string(), exp);
                true
            }
        }
    }

    /// Removes `member`; returns whether it was present (and not expired).
    fn remove(&mut self, member: &str, now: Instant) -> bool {
        self.members.remove(member).is_some_and(|exp| exp > now)
    }

    /// The live members (after dropping expired ones).
    fn live(&mut self, now: Instant) -> &HashMap<String, Instant> {
        self.sweep(now);
        &self.members
    }
}

impl Inner {
    fn members(&mut self, set: &str, now: Instant) -> Option<&HashMap<String, Instant>> {
        Some(self.presence.get_mut(set)?.live(now))
    }
}

#[async_trait]
impl Presence for MemoryStore {
    async fn presence_touch(&self, set: &str, member: &str, ttl: Duration) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        let entry = match inner.presence.get_mut(set) {
            Some(existing) => existing,
            None => inner.presence.entry(set.to_string()).or_default(),
        };
        Ok(entry.touch(member, now + ttl, now))
    }

    async fn presence_remove(&self, set: &str, member: &str) -> StoreResult<bool> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner
            .presence
            .get_mut(set)
            .is_some_and(|s| s.remove(member, now)))
    }

    async fn presence_count(&self, set: &str) -> StoreResult<u64> {
        let now = Instant::now();
        let mut inner = self.lock();
        Ok(inner.members(set, now).map_or(0, |m| m.len() as u64))
    }

    async fn presence_list(
        &self,
        set: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(members) = inner.members(set, now) else {
            return Ok(Vec::new());
        };
        let sorted: BTreeMap<&String, ()> = members.keys().map(|k| (k, ())).collect();
        Ok(sorted
            .into_keys()
            .filter(|m| after.is_none_or(|a| m.as_str() > a))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_set_scans_only_when_a_member_can_have_expired() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut set = PresenceSet::default();
        assert!(set.touch("a", t0 + s(10), t0));
        assert!(set.touch("b", t0 + s(20), t0));
        // A refresh: `a` now lives until 30; 10 stays the (lower) bound until a scan.
        assert!(!set.touch("a", t0 + s(30), t0 + s(1)));
        assert_eq!(set.earliest, Some(t0 + s(10)));
        // Nothing can have expired yet: no scan.
        assert_eq!(set.live(t0 + s(5)).len(), 2);
        assert_eq!(set.earliest, Some(t0 + s(10)));
        // A scan: nobody had expired, and the bound becomes exact.
        assert_eq!(set.live(t0 + s(11)).len(), 2);
        assert_eq!(set.earliest, Some(t0 + s(20)));
        // `b` expired.
        assert_eq!(set.live(t0 + s(21)).len(), 1);
        // An expired member comes back as new; removing an expired one finds nothing.
        assert!(set.touch("b", t0 + s(40), t0 + s(21)));
        assert!(!set.remove("a", t0 + s(31)));
        assert!(set.remove("b", t0 + s(31)));
        assert!(set.live(t0 + s(31)).is_empty());
        assert_eq!(set.earliest, None);
    }
}
