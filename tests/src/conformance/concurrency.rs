//! Threads sharing one transport: no errors, and every thread gets only its own answers.

use newcache_transport::{StoreMode, StoreStatus};

use super::{counter_text, get, hit, ok, set, show, store, Fixture};

/// Eight threads sharing one transport, 200 operations each (set, get, get_many, incr),
/// see no error and each reads back exactly its own values.
pub fn eight_threads_share_one_transport(f: &dyn Fixture) {
    let t = f.transport();
    std::thread::scope(|s| {
        for thread in 0..8u32 {
            s.spawn(move || {
                let counter = format!("thread{thread}:counter").into_bytes();
                set(t, &counter, b"0", 0, 0);
                let mut previous = counter.clone();
                for i in 0..50u32 {
                    let key = format!("thread{thread}:key{i}").into_bytes();
                    let value = format!("thread {thread} value {i} ").repeat(1 + i as usize * 7);
                    let flags = thread * 1000 + i;
                    set(t, &key, value.as_bytes(), flags, 0);
                    let item = hit(t, &key);
                    assert_eq!(item.value, value.as_bytes(), "thread {thread} op {i}");
                    assert_eq!(item.flags, flags, "thread {thread} op {i}");
                    let n = ok("incr", t.incr(&counter, 1));
                    assert_eq!(n, Some(u64::from(i) + 1), "thread {thread} counter");
                    let both = ok("get_many", t.get_many(&[&key, &previous]));
                    assert_eq!(both.len(), 2);
                    assert_eq!(both[0].as_ref().map(|i| i.flags), Some(flags));
                    assert!(
                        both[1].is_some(),
                        "thread {thread} lost {}",
                        show(&previous)
                    );
                    previous = key;
                }
            });
        }
    });
    for thread in 0..8 {
        let counter = format!("thread{thread}:counter").into_bytes();
        assert_eq!(counter_text(t, &counter), "50");
    }
}

/// Sixteen threads, each on keys of its own, interleave add, touch, get, incr, get_many and
/// delete (40 rounds each): every status, counter and value is the one the thread's own
/// history implies, never the answer to another thread's request.
pub fn sixteen_threads_get_only_their_own_answers(f: &dyn Fixture) {
    let t = f.transport();
    std::thread::scope(|s| {
        for thread in 0..16u32 {
            s.spawn(move || {
                let key = format!("own{thread}:key").into_bytes();
                let counter = format!("own{thread}:n").into_bytes();
                let start = u64::from(thread) * 1_000_000;
                set(t, &counter, start.to_string().as_bytes(), 0, 0);
                for i in 0..40u32 {
                    let value = format!("thread {thread} round {i}").into_bytes();
                    let flags = thread * 1000 + i;
                    assert_eq!(
                        store(t, StoreMode::Add, &key, &value, flags),
                        StoreStatus::Stored,
                        "thread {thread} round {i}: add of a free key"
                    );
                    assert_eq!(
                        store(t, StoreMode::Add, &key, b"other", 0),
                        StoreStatus::NotStored,
                        "thread {thread} round {i}: add of a taken key"
                    );
                    assert!(ok("touch", t.touch(&key, 0)), "thread {thread} round {i}");
                    let item = hit(t, &key);
                    assert_eq!(
                        (item.value.as_slice(), item.flags),
                        (value.as_slice(), flags),
                        "thread {thread} round {i}"
                    );
                    assert_eq!(
                        ok("incr", t.incr(&counter, 1)),
                        Some(start + u64::from(i) + 1),
                        "thread {thread} round {i}: its own counter"
                    );
                    let both = ok("get_many", t.get_many(&[&key, &counter]));
                    assert_eq!(both.len(), 2);
                    assert_eq!(
                        both[0].as_ref().map(|i| i.value.as_slice()),
                        Some(value.as_slice()),
                        "thread {thread} round {i}"
                    );
                    assert!(both[1].is_some(), "thread {thread} round {i}");
                    assert!(ok("delete", t.delete(&key)), "thread {thread} round {i}");
                    assert!(!ok("delete", t.delete(&key)), "thread {thread} round {i}");
                    assert!(!ok("touch", t.touch(&key, 0)), "thread {thread} round {i}");
                    assert!(get(t, &key).is_none(), "thread {thread} round {i}");
                }
            });
        }
    });
}
