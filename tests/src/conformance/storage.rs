//! Round trips and conditional stores: what is stored comes back exactly; `add`, `replace`,
//! `append` and `prepend` store only when their condition holds.

use newcache_transport::{StoreMode, StoreStatus};

use super::{get, hit, noise, ok, set, store, value, Fixture};

/// A stored value comes back byte for byte, whatever bytes it holds: protocol line ends,
/// protocol words, NUL, 0xff and every other byte value.
pub fn set_then_get_returns_the_exact_bytes(f: &dyn Fixture) {
    let t = f.transport();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let values: [&[u8]; 8] = [
        b"hello",
        b"line\r\nbreak\r\n",
        b"\r\nEND\r\n",
        b"VALUE other 0 1\r\nx\r\nEND\r\n",
        b"\0nul\0",
        &[0xff, 0x00, 0xfe, 0x80],
        &all_bytes,
        b"ends with a lone \r",
    ];
    for (i, v) in values.iter().enumerate() {
        set(t, format!("bytes:{i}").as_bytes(), v, 0, 0);
    }
    for (i, v) in values.iter().enumerate() {
        let got = value(t, format!("bytes:{i}").as_bytes());
        assert_eq!(got, *v, "value {i} came back altered");
    }
}

/// A zero-length value is an item like any other: a hit with an empty value, not a miss.
pub fn the_empty_value_is_stored_and_is_not_a_miss(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"empty", b"", 7, 0);
    let item = hit(t, b"empty");
    assert_eq!(item.value, b"");
    assert_eq!(item.flags, 7);
}

/// The 32-bit client flags come back exactly, including 0 and `u32::MAX`.
pub fn flags_round_trip_exactly(f: &dyn Fixture) {
    let t = f.transport();
    let flags = [0, 1, 16, 0x100, 0xffff, 0x1_0000, 0x8000_0000, u32::MAX];
    for (i, &fl) in flags.iter().enumerate() {
        set(t, format!("flags:{i}").as_bytes(), b"v", fl, 0);
    }
    for (i, &fl) in flags.iter().enumerate() {
        assert_eq!(
            hit(t, format!("flags:{i}").as_bytes()).flags,
            fl,
            "flags {fl:#x}"
        );
    }
}

/// A key that was never stored is a miss (`None`), not an error.
pub fn a_missing_key_is_a_miss(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(get(t, b"never-stored"), None);
    set(t, b"stored", b"v", 0, 0);
    assert_eq!(get(t, b"never-stored"), None);
    assert_eq!(get(t, b"stored-not"), None);
}

/// `set` replaces both the value and the flags of an existing item.
pub fn set_overwrites_the_value_and_the_flags(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"first", 1, 0);
    set(t, b"k", b"second, longer", 2, 0);
    let item = hit(t, b"k");
    assert_eq!(
        (item.value.as_slice(), item.flags),
        (&b"second, longer"[..], 2)
    );
    set(t, b"k", b"3", 3, 0);
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"3"[..], 3));
}

/// A value of 500 KB (more than any socket buffer) round-trips intact.
pub fn a_500_kb_value_round_trips(f: &dyn Fixture) {
    let t = f.transport();
    let big = noise(500 * 1024);
    set(t, b"big", &big, 5, 0);
    set(t, b"after-big", b"small", 0, 0);
    let got = value(t, b"big");
    assert_eq!(got.len(), big.len());
    assert!(got == big, "the 500 KB value came back altered");
    // The connection is still in step after the large transfer.
    assert_eq!(value(t, b"after-big"), b"small");
    let many = ok("get_many", t.get_many(&[b"big", b"after-big"]));
    assert!(many[0].as_ref().is_some_and(|i| i.value == big));
}

/// Keys of exactly 250 bytes, and keys of UTF-8 (bytes 0x80 and above), are valid.
pub fn keys_of_250_bytes_and_utf8_keys_are_valid(f: &dyn Fixture) {
    let t = f.transport();
    let long = vec![b'k'; 250];
    let utf8 = "ключ-ünïcode-键".as_bytes();
    set(t, &long, b"long", 0, 0);
    set(t, utf8, b"utf8", 0, 0);
    assert_eq!(value(t, &long), b"long");
    assert_eq!(value(t, utf8), b"utf8");
    assert!(ok("delete", t.delete(&long)));
}

/// `add` stores an item under a key that holds none.
pub fn add_stores_an_item_under_a_free_key(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(
        store(t, StoreMode::Add, b"k", b"added", 3),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"added"[..], 3));
}

/// `add` on a key that holds an item answers `NotStored` and leaves the item alone.
pub fn add_does_not_overwrite_an_existing_item(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"original", 1, 0);
    assert_eq!(
        store(t, StoreMode::Add, b"k", b"usurper", 2),
        StoreStatus::NotStored
    );
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"original"[..], 1));
}

/// `replace` overwrites the value and flags of an existing item.
pub fn replace_overwrites_an_existing_item(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"old", 1, 0);
    assert_eq!(
        store(t, StoreMode::Replace, b"k", b"new", 2),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!((item.value.as_slice(), item.flags), (&b"new"[..], 2));
}

/// `replace` on a key that holds no item answers `NotStored` and creates nothing.
pub fn replace_does_not_create_a_missing_item(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(
        store(t, StoreMode::Replace, b"k", b"new", 0),
        StoreStatus::NotStored
    );
    assert_eq!(get(t, b"k"), None);
}

/// `append` adds its bytes after the value; the item keeps its own flags.
pub fn append_adds_bytes_after_the_value_and_keeps_the_flags(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"head", 5, 0);
    assert_eq!(
        store(t, StoreMode::Append, b"k", b"+tail\r\n", 99),
        StoreStatus::Stored
    );
    assert_eq!(
        store(t, StoreMode::Append, b"k", b"", 99),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!(
        (item.value.as_slice(), item.flags),
        (&b"head+tail\r\n"[..], 5)
    );
}

/// `prepend` adds its bytes before the value; the item keeps its own flags.
pub fn prepend_adds_bytes_before_the_value_and_keeps_the_flags(f: &dyn Fixture) {
    let t = f.transport();
    set(t, b"k", b"tail", 5, 0);
    assert_eq!(
        store(t, StoreMode::Prepend, b"k", b"\0head+", 99),
        StoreStatus::Stored
    );
    let item = hit(t, b"k");
    assert_eq!(
        (item.value.as_slice(), item.flags),
        (&b"\0head+tail"[..], 5)
    );
}

/// `append` and `prepend` on a key that holds no item answer `NotStored` and create nothing.
pub fn append_and_prepend_do_not_create_a_missing_item(f: &dyn Fixture) {
    let t = f.transport();
    assert_eq!(
        store(t, StoreMode::Append, b"a", b"x", 0),
        StoreStatus::NotStored
    );
    assert_eq!(
        store(t, StoreMode::Prepend, b"p", b"x", 0),
        StoreStatus::NotStored
    );
    assert_eq!(ok("get_many", t.get_many(&[b"a", b"p"])), vec![None, None]);
}
