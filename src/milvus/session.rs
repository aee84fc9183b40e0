//! Session liveness (design §10.4.1, `common.session.ttl`) as a pure core: deadlines on a
//! clock the caller passes in (milliseconds), so tests use a fake one.
//!
//! Registration and removal are replicated; liveness is leader memory. A new leader knows
//! no keep-alive times, so it `sync`s from the replicated sessions and gives each a full TTL
//! from the moment it took over: a session is never expired by a leader that could not have
//! seen its keep-alives.

use std::collections::HashMap;

/// `common.session.ttl` (15 s).
pub const SESSION_TTL_DEFAULT_MS: u64 = 15_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Session ID → (deadline, TTL), both in ms.
    deadlines: HashMap<i64, (u64, u64)>,
}

impl Liveness {
    /// Makes the tracked set equal the registered one: new sessions get a full TTL from
    /// `now_ms`, known ones keep their deadline, unregistered ones are forgotten.
    pub fn sync<I: IntoIterator<Item = (i64, u64)>>(&mut self, registered: I, now_ms: u64) {
        let mut next = HashMap::with_capacity(self.deadlines.len());
        for (id, ttl) in registered {
            let slot = match self.deadlines.get(&id) {
                Some(&(deadline, _)) => (deadline, ttl),
                None => (now_ms.saturating_add(ttl), ttl),
            };
            next.insert(id, slot);
        }
        self.deadlines = next;
    }

    /// A keep-alive: the session lives a full TTL from now. False if it is not tracked.
    pub fn touch(&mut self, id: i64, now_ms: u64) -> bool {
        match self.deadlines.get_mut(&id) {
            Some((deadline, ttl)) => {
                *deadline = (*deadline).max(now_ms.saturating_add(*ttl));
                true
            }
            None => false,
        }
    }

    /// Sessions whose deadline has passed (they stay tracked until removed or synced away).
    pub fn expired(&self, now_ms: u64) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .deadlines
            .iter()
            .filter(|(_, &(deadline, _))| deadline <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        out.sort_unstable();
        out
    }

    pub fn forget(&mut self, id: i64) {
        self.deadlines.remove(&id);
    }

    /// Milliseconds left before `id` expires.
    pub fn remaining_ms(&self, id: i64, now_ms: u64) -> Option<u64> {
        self.deadlines
            .get(&id)
            .map(|&(deadline, _)| deadline.saturating_sub(now_ms))
    }

    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_extends_and_silence_expires() {
        let mut l = Liveness::default();
        l.sync([(1, 1000), (2, 1000)], 0);
        assert!(l.expired(999).is_empty());
        assert!(l.touch(1, 900));
        assert_eq!(l.expired(1000), vec![2]);
        assert!(l.expired(1899).len() == 1);
        assert_eq!(l.expired(1900), vec![1, 2]);
        assert!(!l.touch(3, 0), "unknown session");
    }

    #[test]
    fn a_new_leader_gives_every_session_a_full_ttl() {
        // The old leader's deadlines are gone; the new one syncs at its takeover time.
        let mut l = Liveness::default();
        l.sync([(1, 15_000), (2, 15_000)], 100_000);
        assert!(l.expired(114_999).is_empty());
        assert_eq!(l.expired(115_000), vec![1, 2]);
        assert_eq!(l.remaining_ms(1, 110_000), Some(5_000));
    }

    #[test]
    fn sync_keeps_known_deadlines_and_forgets_removed_sessions() {
        let mut l = Liveness::default();
        l.sync([(1, 1000)], 0);
        // Later sync (e.g. a new registration appeared): 1 keeps its deadline.
        l.sync([(1, 1000), (2, 1000)], 500);
        assert_eq!(l.remaining_ms(1, 500), Some(500));
        assert_eq!(l.remaining_ms(2, 500), Some(1000));
        l.sync([(2, 1000)], 600);
        assert_eq!(l.remaining_ms(1, 600), None);
        l.forget(2);
        assert!(l.is_empty());
    }
}
