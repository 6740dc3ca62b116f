//! Server-wide commands: `flush_all` and `stats`, on every server.

use std::collections::BTreeSet;

use super::{keys, ok, refs, set, value, Fixture};

/// `flush_all` empties every server; stores afterwards work as usual.
pub fn flush_all_empties_every_server(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("flush", 30);
    for k in &keys {
        set(t, k, b"v", 0, 0);
    }
    ok("flush_all", t.flush_all());
    let left = ok("get_many", t.get_many(&refs(&keys)));
    assert!(left.iter().all(Option::is_none), "items survived flush_all");
    set(t, &keys[0], b"after", 0, 0);
    assert_eq!(value(t, &keys[0]), b"after");
}

/// `stats` answers one non-empty set of statistics per server, under distinct server names,
/// whose `curr_items` add up to the items stored.
pub fn stats_report_the_items_of_every_server(f: &dyn Fixture) {
    let t = f.transport();
    let keys = keys("stats", 5);
    for k in &keys {
        set(t, k, b"v", 0, 0);
    }
    let stats = ok("stats", t.stats());
    assert!(!stats.is_empty(), "stats answered no server");
    let names: BTreeSet<&str> = stats.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(names.len(), stats.len(), "server names repeat: {names:?}");
    let mut curr_items = 0;
    for s in &stats {
        assert!(!s.server.is_empty());
        assert!(!s.stats.is_empty(), "no statistics from {}", s.server);
        let n = s.stats.get("curr_items").map(|v| v.parse::<u64>());
        match n {
            Some(Ok(n)) => curr_items += n,
            other => panic!("{}: curr_items is {other:?}", s.server),
        }
    }
    assert_eq!(curr_items, keys.len() as u64);
}
