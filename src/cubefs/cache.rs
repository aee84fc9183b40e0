//! Reply bodies of the registry's whole-cluster routes (`/admin/getCluster`,
//! `/admin/cluster/getAllDataNodes|getAllMetaNodes`, `/cluster/stat`), kept on shard 0 so a
//! request under load is a lookup and a copy of `Bytes`, not a walk over 10,000 nodes and a
//! megabyte of JSON.
//!
//! **When a cached body is served.** Each body is keyed by what it was built from:
//! - group 0's applied index, read after a read barrier: any registry change (a node added,
//!   moved, a setting) applies an entry, so a request never sees an older registry than a
//!   fresh build would (read-your-writes holds);
//! - the liveness epoch ([`crate::admintask::live_epoch`]): bumped when a node turns
//!   active or inactive, or joins or leaves a liveness table, so a node's `Status` is never
//!   stale either.
//!
//! A body whose key still holds is served. Usage (bytes, and the writability derived from
//! it) changes with every heartbeat and is not part of the key: a body older than
//! [`REFRESH_MS`] is still served, and one rebuild starts in the background, so usage shown
//! is at most about a second older than the heartbeats applied (CubeFS's own figures are
//! as old as the last heartbeat, up to 6 s).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use mast_http::{HeaderName, HeaderValue, Response};

/// Age after which a still-valid body is rebuilt in the background.
pub const REFRESH_MS: u64 = 1_000;

/// What a body was built from: group 0's applied index and the liveness epoch.
pub type Key = (u64, u64);

/// A route and whether the body is gzipped (`x-cfs-accept-encoding`).
pub type Slot = (&'static str, bool);

/// A reply, in a form that crosses shards.
#[derive(Debug, Clone)]
pub struct Parts {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Parts {
    pub fn of(r: Response) -> Parts {
        Parts {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }

    pub fn into_response(self) -> Response {
        Response {
            status: self.status,
            headers: self.headers,
            body: self.body,
            stream: None,
        }
    }
}

struct Entry {
    key: Key,
    built: Instant,
    parts: Parts,
    refreshing: bool,
}

/// What [`ViewCache::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// Valid and recent.
    Fresh(Parts),
    /// Valid but older than [`REFRESH_MS`]: serve it; `refresh` says this caller should
    /// start the (single) background rebuild.
    Stale { parts: Parts, refresh: bool },
    /// Nothing valid: build it now.
    Miss,
}

/// One node's cache (it lives on shard 0's context).
#[derive(Default)]
pub struct ViewCache {
    entries: RefCell<HashMap<Slot, Entry>>,
}

impl ViewCache {
    pub fn lookup(&self, slot: Slot, key: Key) -> Lookup {
        self.lookup_at(slot, key, Instant::now())
    }

    fn lookup_at(&self, slot: Slot, key: Key, now: Instant) -> Lookup {
        let mut entries = self.entries.borrow_mut();
        let Some(e) = entries.get_mut(&slot) else {
            return Lookup::Miss;
        };
        if e.key != key {
            return Lookup::Miss;
        }
        if now.saturating_duration_since(e.built).as_millis() < u128::from(REFRESH_MS) {
            return Lookup::Fresh(e.parts.clone());
        }
        let refresh = !e.refreshing;
        e.refreshing = true;
        Lookup::Stale {
            parts: e.parts.clone(),
            refresh,
        }
    }

    /// Keeps a body built from `key` (replacing any older one).
    pub fn store(&self, slot: Slot, key: Key, parts: Parts) {
        self.store_at(slot, key, parts, Instant::now());
    }

    fn store_at(&self, slot: Slot, key: Key, parts: Parts, now: Instant) {
        self.entries.borrow_mut().insert(
            slot,
            Entry {
                key,
                built: now,
                parts,
                refreshing: false,
            },
        );
    }

    /// A background rebuild failed: the next stale lookup may try again.
    pub fn refresh_failed(&self, slot: Slot) {
        if let Some(e) = self.entries.borrow_mut().get_mut(&slot) {
            e.refreshing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parts(body: &'static str) -> Parts {
        Parts {
            status: 200,
            headers: vec![],
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn body(l: Lookup) -> Option<(&'static str, Option<bool>)> {
        let text = |p: Parts| -> &'static str {
            if p.body == "a" {
                "a"
            } else {
                "b"
            }
        };
        match l {
            Lookup::Fresh(p) => Some((text(p), None)),
            Lookup::Stale { parts, refresh } => Some((text(parts), Some(refresh))),
            Lookup::Miss => None,
        }
    }

    #[test]
    fn a_changed_key_is_a_miss_and_an_old_body_refreshes_once() {
        let c = ViewCache::default();
        let t0 = Instant::now();
        let slot = ("/admin/getCluster", false);
        assert!(body(c.lookup_at(slot, (5, 1), t0)).is_none());
        c.store_at(slot, (5, 1), parts("a"), t0);
        assert_eq!(body(c.lookup_at(slot, (5, 1), t0)), Some(("a", None)));
        // The registry or the liveness moved on: never served.
        assert!(body(c.lookup_at(slot, (6, 1), t0)).is_none());
        assert!(body(c.lookup_at(slot, (5, 2), t0)).is_none());
        assert!(body(c.lookup_at(("/cluster/stat", false), (5, 1), t0)).is_none());
        assert!(body(c.lookup_at((slot.0, true), (5, 1), t0)).is_none());
        // Old: served, and exactly one caller is told to rebuild.
        let later = t0 + Duration::from_millis(REFRESH_MS);
        assert_eq!(
            body(c.lookup_at(slot, (5, 1), later)),
            Some(("a", Some(true)))
        );
        assert_eq!(
            body(c.lookup_at(slot, (5, 1), later)),
            Some(("a", Some(false)))
        );
        c.refresh_failed(slot);
        assert_eq!(
            body(c.lookup_at(slot, (5, 1), later)),
            Some(("a", Some(true)))
        );
        c.store_at(slot, (5, 1), parts("b"), later);
        assert_eq!(body(c.lookup_at(slot, (5, 1), later)), Some(("b", None)));
    }
}
