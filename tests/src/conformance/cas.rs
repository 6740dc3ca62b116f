//! CAS: uniques that every read returns, stores that succeed only with the current one.

use std::collections::BTreeSet;

use newcache_transport::{StoreMode, StoreStatus};

use super::{cas_of, get, hit, keys, ok, refs, set, store, value, Fixture};

/// `get` and `get_many` return each item's CAS unique, and agree on it. (Uniques are
/// per server: items on different servers may share one.)
pub fn get_and_get_many_return_the_cas_unique_of_every_item(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("cas", 10);
    for k in &keys {
        set(t, k, b"v", 0, 0);
    }
    let singles: Vec<Option<u64>> = keys.iter().map(|k| Some(cas_of(t, k))).collect();
    let many = ok("get_many", t.get_many(&refs(&keys)));
    let batch: Vec<Option<u64>> = many
        .iter()
        .map(|i| i.as_ref().and_then(|i| i.cas))
        .collect();
    assert_eq!(batch, singles, "get_many and get disagree on CAS uniques");
    // A modification between the two reads shows in both.
    set(t, &keys[0], b"w", 0, 0);
    let changed = cas_of(t, &keys[0]);
    assert_ne!(Some(changed), singles[0]);
    let again = ok("get_many", t.get_many(&[&keys[0]]));
    assert_eq!(again[0].as_ref().and_then(|i| i.cas), Some(changed));
}

/// `cas` with the unique of a fetched item stores the new value and flags.
pub fn cas_with_the_fetched_unique_stores(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v1", 1, 0);
    let cas = cas_of(t, b"k");
    assert_eq!(
        store(t, StoreMode::Cas(cas), b"k", b"v2", 2),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"v2"[..], 2));
    assert_ne!(
        item.cas,
        Some(cas),
        "a successful cas must change the unique"
    );
}

/// `cas` with a unique the item no longer has answers `Exists` and changes nothing.
pub fn cas_with_a_stale_unique_is_refused_with_exists(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v1", 0, 0);
    let stale = cas_of(t, b"k");
    set(t, b"k", b"v2", 0, 0);
    assert_eq!(
        store(t, StoreMode::Cas(stale), b"k", b"v3", 0),
        StoreStatus::Exists
    );
    assert_eq!(value(t, b"k"), b"v2");
    // A unique that was used once is stale after its own successful cas, too.
    let fresh = cas_of(t, b"k");
    assert_eq!(
        store(t, StoreMode::Cas(fresh), b"k", b"v4", 0),
        StoreStatus::Stored
    );
    assert_eq!(
        store(t, StoreMode::Cas(fresh), b"k", b"v5", 0),
        StoreStatus::Exists
    );
    assert_eq!(value(t, b"k"), b"v4");
}

/// `cas` on a key that holds no item (never stored, or deleted) answers `NotFound`.
pub fn cas_on_a_missing_key_is_not_found(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(
        store(t, StoreMode::Cas(1), b"never", b"v", 0),
        StoreStatus::NotFound
    );
    set(t, b"gone", b"v", 0, 0);
    let cas = cas_of(t, b"gone");
    assert!(ok("delete", t.delete(b"gone")));
    assert_eq!(
        store(t, StoreMode::Cas(cas), b"gone", b"v", 0),
        StoreStatus::NotFound
    );
    assert_eq!(get(t, b"never"), None);
    assert_eq!(get(t, b"gone"), None);
}

/// Every modification (set, replace, append, prepend, incr, decr, cas) gives the item a new
/// CAS unique, even when the value ends up the same.
pub fn cas_uniques_change_on_every_modification(f: &dyn Fixture) {
    let t = f.transport();
    let mut seen = Vec::new();
    set(t, b"k", b"1", 0, 0);
    seen.push(("set", cas_of(t, b"k")));
    set(t, b"k", b"1", 0, 0);
    seen.push(("set again", cas_of(t, b"k")));
    store(t, StoreMode::Replace, b"k", b"1", 0);
    seen.push(("replace", cas_of(t, b"k")));
    store(t, StoreMode::Append, b"k", b"2", 0);
    seen.push(("append", cas_of(t, b"k")));
    store(t, StoreMode::Prepend, b"k", b"3", 0);
    seen.push(("prepend", cas_of(t, b"k")));
    assert_eq!(ok("incr", t.incr(b"k", 1)), Some(313));
    seen.push(("incr", cas_of(t, b"k")));
    assert_eq!(ok("decr", t.decr(b"k", 1)), Some(312));
    seen.push(("decr", cas_of(t, b"k")));
    let last = cas_of(t, b"k");
    assert_eq!(
        store(t, StoreMode::Cas(last), b"k", b"312", 0),
        StoreStatus::Stored
    );
    seen.push(("cas", cas_of(t, b"k")));
    let distinct: BTreeSet<u64> = seen.iter().map(|&(_, c)| c).collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "a modification kept the CAS unique: {seen:?}"
    );
}

/// `touch` changes only the exptime: value, flags and CAS unique stay (as in memcached 1.6),
/// so a `cas` with the unique read before the touch still succeeds.
pub fn touch_keeps_the_value_flags_and_cas_unique(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"v", 9, 0);
    let before = hit(t, b"k");
    assert!(ok("touch", t.touch(b"k", 3600)));
    let after = hit(t, b"k");
    assert_eq!(after, before, "touch changed more than the exptime");
    let cas = before
        .cas
        .unwrap_or_else(|| panic!("the item carries no CAS unique"));
    assert_eq!(
        store(t, StoreMode::Cas(cas), b"k", b"w", 9),
        StoreStatus::Stored
    );
}
