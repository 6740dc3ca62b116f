//! The sans-IO core of memcached's text protocol: requests are encoded into a buffer and
//! replies parsed from one, with no sockets, so blocking and async connections share it.
//!
//! The parser never panics on any input: every length is bounded, every index checked, every
//! number parsed with overflow checks. A reply it cannot make sense of is a [`ParseError`],
//! after which the connection must be dropped.

mod decode;
mod encode;
pub mod meta;
mod reply;

pub(crate) use decode::TOO_MANY_CONNECTIONS;
pub use decode::{parse_status, Decoder, MAX_LINE, MAX_VALUE_LEN};
pub use encode::{
    encode_arith, encode_delete, encode_delete_noreply, encode_get, encode_line, encode_meta_get,
    encode_meta_invalidate, encode_store, encode_touch, BINARY_HEADER,
};
pub use reply::{Expect, Meta, ParseError, Reply, ReplyKey, Status, Values};
// For `meta`, which parses its numbers and keys as the classic replies do.
use decode::parse_u64;

#[cfg(test)]
mod tests {
    use newcache_transport::{Item, StoreMode};

    use super::*;

    fn decode_all(expect: Expect, input: &[u8]) -> Result<Option<(Reply, usize)>, ParseError> {
        let mut d = Decoder::with_capacity(expect, 16);
        Ok(d.decode(input)?.map(|r| (r, d.consumed())))
    }

    /// Feeds `input` as a caller does, one byte more at a time and the consumed bytes
    /// dropped after every call: no prefix is a complete reply, the whole is, and the
    /// result equals a one-shot decode.
    fn split_everywhere(expect: Expect, input: &[u8]) -> Reply {
        let mut d = Decoder::with_capacity(expect, 16);
        let mut start = 0;
        for end in 0..input.len() {
            assert_eq!(
                d.decode(&input[start..end]).unwrap(),
                None,
                "prefix of {end} bytes"
            );
            start += d.consumed();
            assert!(start <= end);
        }
        let reply = d.decode(&input[start..]).unwrap().expect("complete");
        assert_eq!(start + d.consumed(), input.len());
        assert_eq!(decode_all(expect, input).unwrap().unwrap().0, reply);
        reply
    }

    /// Feeds `input` in chunks of `chunk` bytes, reading the rest of a value that is
    /// arriving straight into it (as the transport does for large values) whenever
    /// `direct` says so.
    fn decode_in_chunks(expect: Expect, input: &[u8], chunk: usize, direct: bool) -> Reply {
        let mut d = Decoder::with_capacity(expect, 16);
        let mut buf: Vec<u8> = Vec::new();
        let mut at = 0;
        loop {
            if let Some(reply) = d.decode(&buf).unwrap() {
                buf.drain(..d.consumed());
                assert!(buf.is_empty() && at == input.len(), "{} left", buf.len());
                return reply;
            }
            buf.drain(..d.consumed());
            assert!(
                buf.len() <= MAX_LINE + 1,
                "the buffer holds {} bytes",
                buf.len()
            );
            assert!(
                at < input.len(),
                "the whole input did not complete the reply"
            );
            let n = chunk.min(input.len() - at);
            match d.value_spare().filter(|v| direct && !v.is_empty()) {
                Some(spare) => {
                    let n = n.min(spare.len());
                    spare[..n].copy_from_slice(&input[at..at + n]);
                    d.value_filled(n);
                    at += n;
                }
                None => {
                    buf.extend_from_slice(&input[at..at + n]);
                    at += n;
                }
            }
        }
    }

    #[test]
    fn large_values_arrive_in_pieces_into_their_own_buffer() {
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut input = b"VALUE a 1 3 5\r\nabc\r\n".to_vec();
        input.extend_from_slice(format!("VALUE big 7 {}\r\n", big.len()).as_bytes());
        input.extend_from_slice(&big);
        input.extend_from_slice(b"\r\nVALUE z 0 2\r\nzz\r\nEND\r\n");
        for chunk in [1, 7, 4096, 16 * 1024, 1 << 20] {
            for direct in [false, true] {
                let Reply::Values(values) = decode_in_chunks(Expect::Values, &input, chunk, direct)
                else {
                    panic!("values expected")
                };
                let values: Vec<_> = values.iter().collect();
                assert_eq!(values.len(), 3, "chunk {chunk}");
                assert_eq!(values[1].0, b"big");
                assert!(values[1].1.value == big, "chunk {chunk} direct {direct}");
                assert_eq!(values[1].1.flags, 7);
                assert_eq!(values[2].1.value, b"zz");
            }
        }
        let mut meta = format!("VA {} f5 c9\r\n", big.len()).into_bytes();
        meta.extend_from_slice(&big);
        meta.extend_from_slice(b"\r\n");
        for chunk in [1, 5000, 1 << 20] {
            let Reply::Meta(Meta::Value(m)) = decode_in_chunks(Expect::Meta, &meta, chunk, true)
            else {
                panic!("a meta value expected")
            };
            assert!(m.item.value == big && m.item.flags == 5 && m.item.cas == Some(9));
        }
        // A value not followed by \r\n is an error however it arrived.
        let mut d = Decoder::new(Expect::Values);
        assert_eq!(d.decode(b"VALUE k 0 3\r\nab").unwrap(), None);
        assert_eq!(d.consumed(), 15);
        assert!(d.decode(b"cXX").is_err());
        // value_filled never counts past the value.
        let mut d = Decoder::new(Expect::Values);
        assert_eq!(d.decode(b"VALUE k 0 3\r\n").unwrap(), None);
        assert_eq!(d.value_spare().map(|s| s.len()), Some(3));
        d.value_filled(99);
        assert_eq!(d.value_spare().map(|s| s.len()), Some(0));
        let reply = d.decode(b"\r\nEND\r\n").unwrap().unwrap();
        let Reply::Values(v) = reply else { panic!() };
        assert_eq!(v.len(), 1);
    }

    /// A value's room is not its header's length: it starts at 1 MiB at most and grows as
    /// the bytes fill it. A reply claiming 1 GiB allocated 1 GiB before a byte of it came
    /// (an outside audit: a few threads aborted the process under an address-space limit).
    #[test]
    fn a_value_gets_room_as_its_bytes_arrive_not_as_its_header_claims() {
        use super::decode::FIRST_ROOM;
        for header in ["VALUE k 0 1073741824\r\n", "VA 1073741824 f0\r\n"] {
            let expect = match header.starts_with("VA ") {
                true => Expect::Meta,
                false => Expect::Values,
            };
            let mut d = Decoder::new(expect);
            let mut input = header.as_bytes().to_vec();
            input.extend_from_slice(&[7u8; 1000]);
            assert_eq!(d.decode(&input).unwrap(), None);
            assert_eq!(
                d.value_spare().map(|s| s.len()),
                Some(FIRST_ROOM - 1000),
                "{header}"
            );
        }
        // A value over the first room arrives whole, fed or read straight into its room.
        let big: Vec<u8> = (0..(FIRST_ROOM * 5 / 2) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut input = format!("VALUE big 3 {}\r\n", big.len()).into_bytes();
        input.extend_from_slice(&big);
        input.extend_from_slice(b"\r\nEND\r\n");
        let mut meta = format!("VA {} f3\r\n", big.len()).into_bytes();
        meta.extend_from_slice(&big);
        meta.extend_from_slice(b"\r\n");
        for chunk in [4096, FIRST_ROOM - 1, FIRST_ROOM + 1, big.len() + 100] {
            for direct in [false, true] {
                let Reply::Values(values) = decode_in_chunks(Expect::Values, &input, chunk, direct)
                else {
                    panic!("values expected")
                };
                let value = &values.iter().next().unwrap().1.value;
                assert!(value == &big, "chunk {chunk} direct {direct}");
                // Room for the value, not twice it (`resize` alone doubles the capacity).
                assert!(
                    value.capacity() < big.len() + FIRST_ROOM,
                    "{}",
                    value.capacity()
                );
                let Reply::Meta(Meta::Value(m)) =
                    decode_in_chunks(Expect::Meta, &meta, chunk, direct)
                else {
                    panic!("a meta value expected")
                };
                assert!(m.item.value == big, "meta: chunk {chunk} direct {direct}");
            }
        }
    }

    /// A `VALUE` block past one per key asked is an error at once, wherever the bytes
    /// split: a server sending them without end was read until the read timeout.
    #[test]
    fn a_get_reply_carries_at_most_one_value_per_key_asked() {
        let two = b"VALUE a 0 1\r\nx\r\nVALUE b 0 1\r\ny\r\nEND\r\n";
        let mut d = Decoder::with_capacity(Expect::Values, 2);
        let Some(Reply::Values(values)) = d.decode(two).unwrap() else {
            panic!("values")
        };
        assert_eq!(values.len(), 2);
        for (mut d, asked) in [
            (Decoder::new(Expect::Values), 1),
            (Decoder::with_capacity(Expect::Values, 0), 1),
            (Decoder::with_capacity(Expect::Values, 2), 2),
        ] {
            let mut endless = Vec::new();
            for _ in 0..=asked {
                endless.extend_from_slice(b"VALUE a 0 3\r\nabc\r\n");
            }
            // Byte by byte: `decode` is given what it did not consume, and one byte more.
            let (mut from, mut to) = (0, 1);
            let error = loop {
                match d.decode(&endless[from..to]) {
                    Ok(None) => from += d.consumed(),
                    Ok(Some(r)) => panic!("{r:?}"),
                    Err(e) => break e,
                }
                to += 1;
                assert!(to <= endless.len(), "no error after {asked} values");
            };
            assert!(error.to_string().contains("more VALUE blocks"), "{error}");
        }
        let mut d = Decoder::new(Expect::Meta);
        d.reset(Expect::Values, 0);
        assert!(d.decode(two).is_err(), "a reset to 0 takes one value");
    }

    /// A decoder reset for the next reply reads it as a new one would: no tag, no values,
    /// and no value left over from an error line in the middle of a `VALUE` block.
    #[test]
    fn a_reset_decoder_reads_the_next_reply_as_a_new_one() {
        let mut d = Decoder::new(Expect::Meta);
        let Some(Reply::Meta(Meta::Value(_))) = d.decode(b"VA 2 f1 c1 kfoo O7\r\nhi\r\n").unwrap()
        else {
            panic!("a value")
        };
        assert_eq!(d.tag().opaque(), Some(7));
        d.reset(Expect::Values, 2);
        let input = b"VALUE a 0 1\r\nx\r\nSERVER_ERROR out of memory\r\n";
        assert!(matches!(
            d.decode(input).unwrap(),
            Some(Reply::Status(Status::ServerError(_)))
        ));
        d.reset(Expect::Values, 0);
        let Some(Reply::Values(values)) = d.decode(b"END\r\n").unwrap() else {
            panic!("values")
        };
        assert_eq!(values.len(), 0, "the value before the error line is gone");
        d.reset(Expect::Meta, 0);
        assert_eq!(d.decode(b"EN\r\n").unwrap(), Some(Reply::Meta(Meta::Miss)));
        assert_eq!(d.tag().opaque(), None);
        assert_eq!(d.tag().key(), None);
    }

    #[test]
    fn encodes_requests() {
        let mut out = Vec::new();
        encode_get(&mut out, &[b"a", b"b"], true);
        encode_store(&mut out, StoreMode::Set, b"k", b"v\r\n", 16, 300, false);
        encode_store(&mut out, StoreMode::Cas(42), b"k", b"", 0, 0, true);
        encode_store(
            &mut out,
            StoreMode::Cas(u64::MAX),
            b"k",
            b"",
            u32::MAX,
            0,
            false,
        );
        encode_delete(&mut out, b"k");
        encode_arith(&mut out, false, b"n", 7);
        encode_touch(&mut out, b"k", 9);
        encode_line(&mut out, "flush_all");
        assert_eq!(
            out,
            b"gets a b\r\nset k 16 300 3\r\nv\r\n\r\ncas k 0 0 0 42 noreply\r\n\r\ncas k 4294967295 0 0 18446744073709551615\r\n\r\ndelete k\r\ndecr n 7\r\ntouch k 9\r\nflush_all             \r\n"
        );
        // Every bare line is as long as a binary header, so a binary-only server refuses it.
        let mut line = Vec::new();
        encode_line(&mut line, "stats");
        assert_eq!(line, b"stats                 \r\n");
        assert_eq!(line.len(), BINARY_HEADER);
    }

    #[test]
    fn parses_every_status_line() {
        for (line, status) in [
            (&b"STORED\r\n"[..], Status::Stored),
            (b"NOT_STORED\r\n", Status::NotStored),
            (b"EXISTS\r\n", Status::Exists),
            (b"NOT_FOUND\r\n", Status::NotFound),
            (b"DELETED\r\n", Status::Deleted),
            (b"TOUCHED\r\n", Status::Touched),
            (b"OK\r\n", Status::Ok),
            (b"ERROR\r\n", Status::Error),
            (b"18446744073709551615\r\n", Status::Number(u64::MAX)),
            (b"5  \r\n", Status::Number(5)),
            (b"VERSION 1.6.18\r\n", Status::Version("1.6.18".into())),
            (
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
                Status::ClientError("cannot increment or decrement non-numeric value".into()),
            ),
            (
                b"SERVER_ERROR object too large for cache\r\n",
                Status::ServerError("object too large for cache".into()),
            ),
            (
                b"ERROR some reason\r\n",
                Status::ServerError("some reason".into()),
            ),
        ] {
            assert_eq!(
                split_everywhere(Expect::Status, line),
                Reply::Status(status)
            );
        }
        // memcached over its connection limit: its own failure, said so, in either dialect.
        for expect in [Expect::Status, Expect::Meta, Expect::Values] {
            match split_everywhere(expect, b"ERROR Too many open connections\r\n") {
                Reply::Status(Status::ServerError(message)) => {
                    assert!(
                        message.starts_with("Too many open connections: "),
                        "{message}"
                    );
                    assert!(message.contains("did not run"), "{message}");
                }
                other => panic!("{expect:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn parses_values_with_and_without_cas() {
        let input = b"VALUE a 16 5 77\r\nhello\r\nVALUE b 4294967295 4\r\n\r\n\x00\xff\r\nEND\r\n";
        let Reply::Values(values) = split_everywhere(Expect::Values, input) else {
            panic!("values expected")
        };
        assert_eq!(values.len(), 2);
        let values: Vec<_> = values.iter().collect();
        assert_eq!(values[0].0, b"a");
        assert_eq!(
            *values[0].1,
            Item {
                value: b"hello".to_vec(),
                flags: 16,
                cas: Some(77)
            }
        );
        assert_eq!(
            *values[1].1,
            Item {
                value: b"\r\n\x00\xff".to_vec(),
                flags: u32::MAX,
                cas: None
            }
        );
        assert_eq!(
            split_everywhere(Expect::Values, b"END\r\n"),
            Reply::Values(Box::default())
        );
        assert_eq!(
            split_everywhere(Expect::Values, b"SERVER_ERROR out of memory\r\n"),
            Reply::Status(Status::ServerError("out of memory".into()))
        );
    }

    #[test]
    fn a_reply_stops_where_it_ends() {
        let (reply, used) = decode_all(Expect::Status, b"STORED\r\nDELETED\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((reply, used), (Reply::Status(Status::Stored), 8));
        let (_, used) = decode_all(Expect::Values, b"END\r\nSTORED\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(used, 5);
    }

    #[test]
    fn a_meta_line_that_is_two_replies_run_together_is_refused() {
        // A duplicated part of one reply right before the next, read as one line: the
        // second reply's key and token came last and were taken, and the line read as the
        // first reply's code (an outside audit: `delete` of a missing key answered `true`).
        for merged in [
            &b"HD k-1-63af3e NF k-1-da44 O57\r\n"[..],
            b"HD k-1-63af3eNF k-1-da44 O57\r\n",
            b"HD NF k-1-da44 O57\r\n",
            b"HD O5NS k-1-da44 O57\r\n",
            b"EN O5 O6\r\n",
            b"HD WNF k-1 O1\r\n",
            b"VA 1 f0 c1 k-1 O5VA 1 f0 c2 k-1 O6\r\nx\r\n",
            b"VA 1 f16 O1 f0\r\nx\r\n",
            b"HD cX O1\r\n",
        ] {
            let e = decode_all(Expect::Meta, merged).unwrap_err();
            assert!(e.0.contains("meta reply"), "{e}");
        }
        // What memcached sends passes: every flag it returns, a trailing space.
        for fine in [
            &b"HD O5 k-1-da44 c12 t-1 f0 s3 h1 l20 b\r\n"[..],
            b"EN O5 k-1 \r\n",
            b"VA 1 f0 c1 t-1 W X Z k-1 O5\r\nx\r\n",
        ] {
            assert!(
                decode_all(Expect::Meta, fine).unwrap().is_some(),
                "{fine:?}"
            );
        }
    }

    #[test]
    fn parses_meta_replies() {
        let reply = split_everywhere(Expect::Meta, b"VA 3 f272 c2 t30 Z X\r\nabc\r\n");
        let Reply::Meta(Meta::Value(m)) = reply else {
            panic!("a value")
        };
        assert_eq!(
            (m.item.value.as_slice(), m.item.flags, m.item.cas),
            (&b"abc"[..], 272, Some(2))
        );
        assert!(m.stale && m.win_taken && !m.win);
        let Reply::Meta(Meta::Value(m)) =
            split_everywhere(Expect::Meta, b"VA 0 f0 c1 t-1 W\r\n\r\n")
        else {
            panic!("a value")
        };
        assert!(m.win && m.item.value.is_empty());
        for (input, meta) in [
            (&b"EN\r\n"[..], Meta::Miss),
            (b"HD\r\n", Meta::Done),
            (b"HD c5\r\n", Meta::Done),
            (b"NF\r\n", Meta::NotFound),
            (b"NS\r\n", Meta::NotStored),
            (b"EX\r\n", Meta::Exists),
        ] {
            assert_eq!(split_everywhere(Expect::Meta, input), Reply::Meta(meta));
        }
        assert_eq!(
            split_everywhere(Expect::Meta, b"ERROR\r\n"),
            Reply::Status(Status::Error)
        );
        for bad in [
            &b"VA x\r\n"[..],
            b"VA 1 fz\r\nv\r\n",
            b"VA 1\r\nvXX",
            b"STORED\r\n",
            b"VA\r\n",
        ] {
            assert!(
                decode_all(Expect::Meta, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut out = Vec::new();
        encode_meta_get(&mut out, b"k", 60);
        encode_meta_invalidate(&mut out, b"k", 120);
        assert_eq!(out, b"mg k v f c t R60\r\nmd k I T120\r\n");
    }

    #[test]
    fn parses_stats() {
        let input = b"STAT pid 1\r\nSTAT version 1.6.18\r\nSTAT rusage_user 0.1 extra\r\nEND\r\n";
        assert_eq!(
            split_everywhere(Expect::Stats, input),
            Reply::Stats(vec![
                ("pid".into(), "1".into()),
                ("version".into(), "1.6.18".into()),
                ("rusage_user".into(), "0.1 extra".into()),
            ])
        );
    }

    /// What memcached never sends to `stats` or `stats settings` is refused: no statistics
    /// (a stray `END` read before the reply), or one name twice (a segment relayed twice:
    /// `upSTAT` and a second `pid` were taken as statistics, an outside audit).
    #[test]
    fn a_stats_reply_of_nothing_or_a_name_twice_is_refused() {
        assert!(decode_all(Expect::Stats, b"END\r\n").is_err());
        for twice in [
            &b"STAT pid 5\r\nSTAT upSTAT pid 5\r\nSTAT uptime 9\r\nEND\r\n"[..],
            b"STAT pid 5\r\nSTAT uptime 1STAT pid 5\r\nSTAT uptime 12\r\nEND\r\n",
            b"STAT pid 5\r\nSTAT uptime 9\r\nSTAT pid 5\r\nSTAT uptime 9\r\nEND\r\n",
        ] {
            assert!(
                decode_all(Expect::Stats, twice).is_err(),
                "{:?}",
                String::from_utf8_lossy(twice)
            );
        }
        // `STAT` in a value is a value (socket and memory file paths).
        let path = b"STAT maxbytes 67108864\r\nSTAT domain_socket /run/STATS/mc.sock\r\nSTAT memory_file /srv/mySTAT dir/mem\r\nEND\r\n";
        assert_eq!(
            split_everywhere(Expect::Stats, path),
            Reply::Stats(vec![
                ("maxbytes".into(), "67108864".into()),
                ("domain_socket".into(), "/run/STATS/mc.sock".into()),
                ("memory_file".into(), "/srv/mySTAT dir/mem".into()),
            ])
        );
    }

    /// Numbers are 1 to 20 ASCII digits that fit in their field: the fast path (up to 19
    /// digits) and the careful one (20) agree at every edge.
    #[test]
    fn numbers_are_read_to_the_last_digit_that_fits() {
        let cas = |line: &str| {
            let input = format!("{line}\r\nv\r\nEND\r\n");
            match decode_all(Expect::Values, input.as_bytes()) {
                Ok(Some((Reply::Values(v), _))) => Ok(v.iter().next().map(|(_, i)| i.cas)),
                other => Err(format!("{other:?}")),
            }
        };
        // 0 is no unique (memcached without CAS, `-C`, gives every item 0).
        assert_eq!(cas("VALUE a 0 1 0"), Ok(Some(None)));
        assert_eq!(cas("VALUE a 0 1 1"), Ok(Some(Some(1))));
        assert_eq!(
            cas("VALUE a 0 1 9999999999999999999"),
            Ok(Some(Some(9_999_999_999_999_999_999)))
        );
        assert_eq!(
            cas("VALUE a 0 1 10000000000000000000"),
            Ok(Some(Some(10_000_000_000_000_000_000)))
        );
        assert_eq!(
            cas("VALUE a 0 1 18446744073709551615"),
            Ok(Some(Some(u64::MAX)))
        );
        assert_eq!(cas("VALUE a 0 1 00000000000000000042"), Ok(Some(Some(42))));
        assert_eq!(cas("VALUE a 4294967295 1"), Ok(Some(None)));
        for bad in [
            "VALUE a 0 1 18446744073709551616",
            "VALUE a 0 1 99999999999999999999",
            "VALUE a 0 1 000000000000000000042",
            "VALUE a 0 1 ",
            "VALUE a 0 1 1x",
            "VALUE a 0 +1",
            "VALUE a -0 1",
            "VALUE a 0 1 :",
        ] {
            assert!(cas(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for bad in [
            &b"HELLO\r\n"[..],
            b"STORED\n",
            b"VALUE a 0\r\n",
            b"VALUE a x 1\r\nv\r\nEND\r\n",
            b"VALUE a 0 1 2 3\r\nv\r\nEND\r\n",
            b"VALUE a 4294967296 1\r\nv\r\nEND\r\n",
            b"VALUE a 0 99999999999999999999999\r\n",
            b"VALUE a 0 2000000000\r\n",
            b"VALUE a 0 1\r\nvXX",
            b"VALUE  0 1\r\nv\r\nEND\r\n",
            b"99999999999999999999999\r\n",
            b"STORED\r\n",
        ] {
            let expect = if bad.starts_with(b"VALUE") || bad == b"STORED\r\n" {
                Expect::Values
            } else {
                Expect::Status
            };
            assert!(
                decode_all(expect, bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(decode_all(Expect::Status, &long).is_err());
        assert!(decode_all(Expect::Stats, b"STORED\r\n").is_err());
    }

    #[test]
    fn never_panics_on_mutated_or_random_input() {
        let seeds: [&[u8]; 4] = [
            b"VALUE a 16 5 77\r\nhello\r\nVALUE b 0 1\r\nx\r\nEND\r\n",
            b"STAT pid 1\r\nEND\r\n",
            b"18446744073709551615\r\n",
            b"CLIENT_ERROR bad\r\n",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 4 + 1) {
                let r = next();
                let i = (r as usize >> 8) % (input.len() + 1);
                match r % 4 {
                    0 if i < input.len() => input[i] = (r >> 32) as u8,
                    1 => input.insert(i, (r >> 40) as u8),
                    2 if i < input.len() => {
                        input.remove(i);
                    }
                    _ => input.truncate(i),
                }
            }
            for expect in [Expect::Status, Expect::Values, Expect::Stats, Expect::Meta] {
                let _ = decode_all(expect, &input);
            }
        }
    }
}
