//! Writes the seed inputs of `fuzz/corpus/` that newcache's own encoders make: herd flags
//! (`herd_state`), values in each codec (`value_codec`) and
//! django-newcache tuples `wrap_marker` writes (`pickle_marker`). The seeds from outside
//! newcache (a real memcached's replies, Python's pickles, URLs) come from
//! `fuzz/seeds/make_seeds.py`.
//!
//! `cargo run -p newcache-fuzz-targets --example seeds` (in fuzz/). Files are named by
//! their content's SHA-1, as libFuzzer names corpus files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use newcache::codec::{self, pickle, ValueCodec, FLAG_INT, FLAG_PICKLE, FLAG_TEXT, FLAG_ZLIB};
use newcache_herd::{Envelope, Herd, HERD_FLAG};
use serde::Serialize;
use sha1::{Digest, Sha1};

/// Mirrors of the value_codec target's types (the same serde shapes).
#[derive(Serialize)]
struct Record {
    name: String,
    ids: Vec<u32>,
    active: Option<bool>,
    tags: BTreeMap<String, i64>,
    pairs: Vec<(String, i64)>,
    kind: Kind,
}

#[derive(Serialize)]
#[allow(dead_code)]
enum Kind {
    Unit,
    Newtype(String),
    Tuple(i32, bool),
    Struct { id: u64, label: Option<String> },
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("corpus")
}

fn seed(target: &str, data: &[u8], count: &mut usize) {
    let dir = corpus().join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    let name: String = Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(name);
    if !path.exists() {
        std::fs::write(&path, data).expect("seed file");
        *count += 1;
    }
}

fn main() {
    let mut herd = 0;
    let mut values = 0;
    let mut markers = 0;

    // herd_state: flags, clock, herd timeout, soft expiry, compute, beta, u; then bytes.
    let now: u64 = 1_700_000_000_123;
    for (ttl_secs, herd_timeout, compute) in [
        (300u64, 60u32, 0u32),
        (1, 0, 5),
        (9 * 3600, 60, 250),
        (20 * 86_400, 600, 3000),
        (400 * 86_400, 60, 90_000),
        (5 * 365 * 86_400, 3600, 12),
        (0, 60, 40),
    ] {
        let envelope = Envelope {
            soft_expiry_millis: now + ttl_secs * 1000,
            compute_millis: compute,
        };
        for value_flags in [0u32, 1, 4, 16, 16 | 512] {
            let flags = envelope.flags(now, herd_timeout) | value_flags;
            for read_at in [now, now + ttl_secs * 1000 + 1, now - 86_400_000] {
                let mut input = Vec::new();
                input.extend_from_slice(&flags.to_le_bytes());
                input.extend_from_slice(&read_at.to_le_bytes());
                input.extend_from_slice(&herd_timeout.to_le_bytes());
                input.extend_from_slice(&envelope.soft_expiry_millis.to_le_bytes());
                input.extend_from_slice(&compute.to_le_bytes());
                input.extend_from_slice(&1.0f64.to_le_bytes());
                input.extend_from_slice(&0.5f64.to_le_bytes());
                seed("herd_state", &input, &mut herd);
            }
        }
        let invalidated = Herd::new(herd_timeout).invalidated(Some(&envelope), now);
        let mut input = invalidated.flags(now, herd_timeout).to_le_bytes().to_vec();
        input.extend_from_slice(&now.to_le_bytes());
        seed("herd_state", &input, &mut herd);
    }
    for flags in [HERD_FLAG, HERD_FLAG | 16, 0, u32::MAX] {
        seed("herd_state", &flags.to_le_bytes(), &mut herd);
    }

    // value_codec: type selector, flags, offset byte; then the bytes.
    let mut value = |which: u8, flags: u32, bytes: &[u8]| {
        let mut input = vec![which];
        input.extend_from_slice(&flags.to_le_bytes());
        input.push(0);
        input.extend_from_slice(bytes);
        seed("value_codec", &input, &mut values);
        if let Some(z) = codec::deflate(bytes) {
            let mut input = vec![which];
            input.extend_from_slice(&(flags | FLAG_ZLIB).to_le_bytes());
            input.push(0);
            input.extend_from_slice(&z);
            seed("value_codec", &input, &mut values);
        }
    };
    let record = Record {
        name: "games".into(),
        ids: vec![1, 2, 3],
        active: Some(true),
        tags: [("a".to_string(), -1i64)].into(),
        pairs: vec![("p".into(), 2)],
        kind: Kind::Struct {
            id: 7,
            label: Some("x".into()),
        },
    };
    let map: HashMap<String, Vec<i64>> = [("a".to_string(), vec![1, 2])].into();
    let tags: [Kind; 3] = [Kind::Unit, Kind::Newtype("n".into()), Kind::Tuple(-1, true)];
    for codec in [ValueCodec::Bincode, ValueCodec::Json, ValueCodec::Pickle] {
        let mut enc = |which: u8, v: &dyn erased::Encode| {
            let mut out = Vec::new();
            if let Ok(flags) = v.encode(&mut out, codec) {
                value(which, flags, &out);
            }
        };
        enc(0, &"héllo");
        enc(1, &serde_bytes_like());
        enc(2, &-42i64);
        enc(3, &u64::MAX);
        enc(4, &true);
        enc(5, &1.5f64);
        enc(6, &record);
        enc(7, &map);
        enc(8, &Some(vec!["a".to_string(), "b".to_string()]));
        enc(8, &None::<Vec<String>>);
        enc(9, &("x".to_string(), 5i64, false));
        for kind in &tags {
            enc(10, kind);
        }
        enc(11, &'é');
        enc(12, &i128::MIN);
        enc(13, &255u8);
        enc(14, &vec![Some(0.5f64), None, Some(f64::NAN)]);
        enc(15, &vec![vec![1u8, 2], vec![]]);
        enc(
            16,
            &serde_json::json!({"a": [1, 2.5, null, "x"], "b": {"c": true}}),
        );
    }

    // pickle_marker: expiry, flags; then the bytes (here: tuples wrap_marker wrote).
    let mut marker = |expiry: u64, flags: u32, bytes: &[u8]| {
        let mut input = expiry.to_le_bytes().to_vec();
        input.extend_from_slice(&flags.to_le_bytes());
        input.extend_from_slice(bytes);
        seed("pickle_marker", &input, &mut markers);
    };
    for (bytes, flags) in [
        (&b"hello"[..], FLAG_TEXT),
        (b"\x00\xff", 0),
        (b"42", FLAG_INT),
        (b"-9223372036854775809", FLAG_INT),
        (b"\x80\x03}q\x00X\x01\x00\x00\x00aq\x01K\x01s.", FLAG_PICKLE),
    ] {
        for expiry in [1_700_000_000u64, 1 << 31, u64::MAX] {
            if let Ok(wrapped) = pickle::wrap_marker(bytes, flags, expiry) {
                marker(expiry / 2, 3, &wrapped);
                marker(expiry, flags.min(3), bytes);
            }
        }
    }

    println!(
        "herd_state: {herd} new seeds\nvalue_codec: {values} new seeds\npickle_marker: {markers} new seeds"
    );
}

/// A `Vec<u8>`.
fn serde_bytes_like() -> Vec<u8> {
    vec![0, 255, b'a', b'\r', b'\n']
}

/// Encoding through a trait object, so one closure takes values of every type.
mod erased {
    use newcache::codec::{self, CodecError, ValueCodec};
    use serde::Serialize;

    pub trait Encode {
        fn encode(&self, out: &mut Vec<u8>, codec: ValueCodec) -> Result<u32, CodecError>;
    }

    impl<T: Serialize + ?Sized> Encode for T {
        fn encode(&self, out: &mut Vec<u8>, codec: ValueCodec) -> Result<u32, CodecError> {
            codec::encode(self, out, codec)
        }
    }
}
