//! The text protocol's reply decoder (`newcache_transport_text::proto::Decoder`), fed
//! arbitrary bytes as the replies to get/gets/get_many, store/delete/incr/touch, stats and
//! meta requests, in arbitrary chunkings.
//!
//! Input layout: byte 0 is the mode (bits 0-1: the first reply's kind, 0 status, 1 values,
//! 2 stats, 3 meta; bit 2: read the rest of a value that is arriving straight into it, as
//! the transport does for large values; bit 3: a decoder made with capacity for several
//! values, as get_many's; bit 4: pipelined replies take turns through the four kinds
//! instead of repeating the first), byte 1 seeds the chunk sizes, byte 2 picks the largest
//! chunk; the rest is the bytes the server sent.
//!
//! Checks, for every reply the bytes hold (one after another, as pipelined replies arrive):
//! - no panic; `consumed()` never exceeds the bytes given;
//! - the reply decoded from the bytes in one piece equals the reply decoded from them in
//!   chunks, reading values straight into their buffers or not, and both used the same
//!   bytes (or both failed); the one difference allowed is a line longer than
//!   [`MAX_LINE`], which only a line arriving in one piece can get through;
//! - between calls the decoder leaves at most [`MAX_LINE`] bytes unconsumed, and none when
//!   it offers a value's spare room to read into (else bytes would be reordered);
//! - what was decoded is what the bytes say: each `VALUE` block's key, flags, CAS and
//!   value bytes (a value's length is its header's), each `STAT` line, a meta reply's code,
//!   flags and value, a status line; and a reply's kind is the one asked for (or an error
//!   line);
//! - a meta reply's tag (`Decoder::tag`: the opaque token `O` and key `k` it echoed, which
//!   match a reply to its request) is what its line says, the same however the bytes
//!   arrived, and empty for an error line.

use newcache_transport_text::proto::meta::Tag;
use newcache_transport_text::proto::{
    parse_status, Decoder, Expect, Meta, ParseError, Reply, Status, MAX_LINE,
};

const KINDS: [Expect; 4] = [Expect::Status, Expect::Values, Expect::Stats, Expect::Meta];

/// Largest chunk sizes byte 2 picks from (the last, the whole input at once).
const CHUNK_LIMITS: [usize; 12] = [1, 2, 3, 5, 8, 13, 64, 256, 1024, 4096, 16384, usize::MAX];

/// Replies decoded from one input at most (each is decoded twice, in full).
const MAX_REPLIES: usize = 64;

/// The decoder over replies of any kind (`Expect` from the mode byte).
pub fn text_reply(data: &[u8]) {
    run(data, false);
}

/// The decoder over meta replies only (`mg`/`ms`/`md`...: `VA`, `HD`, `EN`, `NF`, `NS`,
/// `EX`, or an error line); the input's layout is [`text_reply`]'s, the kind bits ignored.
pub fn meta_reply(data: &[u8]) {
    run(data, true);
}

struct Mode {
    direct: bool,
    capacity: bool,
    rotate: bool,
}

fn run(data: &[u8], meta_only: bool) {
    let mut input = crate::Input::new(data);
    let mode_byte = input.u8();
    let seed = input.u8();
    let limit = CHUNK_LIMITS[usize::from(input.u8()) % CHUNK_LIMITS.len()];
    let mut bytes = input.rest();
    let mode = Mode {
        direct: mode_byte & 0b100 != 0,
        capacity: mode_byte & 0b1000 != 0,
        rotate: mode_byte & 0b1_0000 != 0,
    };
    let mut kind = usize::from(mode_byte & 0b11);
    // At most about 64 reads per input: a long line arriving byte by byte is rescanned on
    // every read (as in the transport, bounded by MAX_LINE), which would make the target
    // slow for no new coverage.
    let limit = limit.max(bytes.len() / 64);
    let mut chunks = Chunks::new(seed, limit);
    for _ in 0..MAX_REPLIES {
        if bytes.is_empty() {
            return;
        }
        let expect = if meta_only { Expect::Meta } else { KINDS[kind] };
        let new = || {
            if mode.capacity {
                Decoder::with_capacity(expect, 8)
            } else {
                Decoder::new(expect)
            }
        };
        // The whole input at once.
        let mut whole = new();
        let at_once = whole.decode(bytes);
        let used_at_once = whole.consumed();
        assert!(
            used_at_once <= bytes.len(),
            "consumed {used_at_once} of {} bytes",
            bytes.len()
        );
        // The same bytes as they might arrive from a socket.
        let (in_chunks, used_in_chunks, tag_in_chunks) =
            chunked(new(), bytes, &mut chunks, mode.direct);
        match (&at_once, &in_chunks) {
            (Ok(Some(a)), Ok(Some(b))) => {
                assert_eq!(a, b, "one piece and chunks decode differently");
                assert_eq!(
                    used_at_once, used_in_chunks,
                    "one piece and chunks used different byte counts for {a:?}"
                );
                assert_eq!(
                    whole.tag(),
                    &tag_in_chunks,
                    "one piece and chunks read different tags for {a:?}"
                );
            }
            (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
            (Ok(_), Err(ParseError(msg))) if msg.contains("no end of line") => {
                // A line over MAX_LINE bytes: accepted when it arrives whole, refused when
                // it arrives in pieces (the decoder gives up waiting for its end).
            }
            (a, b) => panic!("one piece gave {a:?}, chunks {b:?}"),
        }
        let Ok(Some(reply)) = at_once else {
            return;
        };
        let raw = &bytes[..used_at_once];
        check_reply(expect, &reply, raw, whole.tag());
        bytes = &bytes[used_at_once..];
        if mode.rotate {
            kind = (kind + 1) % KINDS.len();
        }
    }
}

/// Chunk sizes from 1 to `limit`, from a small xorshift generator.
struct Chunks {
    state: u32,
    limit: usize,
}

impl Chunks {
    fn new(seed: u8, limit: usize) -> Self {
        Chunks {
            state: 0x9E37_79B9 ^ u32::from(seed),
            limit,
        }
    }

    fn next(&mut self) -> usize {
        if self.limit == usize::MAX {
            return usize::MAX;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + (self.state as usize) % self.limit
    }
}

/// Feeds `input` to `decoder` as the transport does: each read appended to the buffer, the
/// consumed bytes dropped after every call, and, when `direct`, the rest of an arriving value
/// read straight into it (the value's room first, the buffer after, as one vectored read).
/// Returns the result, how many of `input`'s bytes the reply took, and the decoder's tag.
fn chunked(
    mut decoder: Decoder,
    input: &[u8],
    chunks: &mut Chunks,
    direct: bool,
) -> (Result<Option<Reply>, ParseError>, usize, Tag) {
    let mut buf: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let result = decoder.decode(&buf);
        let consumed = decoder.consumed();
        assert!(
            consumed <= buf.len(),
            "consumed {consumed} of {} bytes",
            buf.len()
        );
        match result {
            Ok(None) => buf.drain(..consumed),
            Err(e) => return (Err(e), at - buf.len(), *decoder.tag()),
            Ok(Some(reply)) => {
                buf.drain(..consumed);
                return (Ok(Some(reply)), at - buf.len(), *decoder.tag());
            }
        };
        assert!(
            buf.len() <= MAX_LINE,
            "{} bytes left unconsumed by a decoder that wants more",
            buf.len()
        );
        if at == input.len() {
            return (Ok(None), at - buf.len(), *decoder.tag());
        }
        let n = chunks.next().min(input.len() - at);
        let read = &input[at..at + n];
        at += n;
        let room = match decoder.value_spare() {
            Some(spare) if direct && !spare.is_empty() => {
                assert!(
                    buf.is_empty(),
                    "the decoder offers a value's room while {} earlier bytes wait",
                    buf.len()
                );
                let k = spare.len().min(n);
                spare[..k].copy_from_slice(&read[..k]);
                k
            }
            _ => 0,
        };
        decoder.value_filled(room);
        buf.extend_from_slice(&read[room..]);
    }
}

/// The next `\r\n`-terminated line of `raw` from `pos`: the line and where the next starts.
fn line_at(raw: &[u8], pos: usize) -> (&[u8], usize) {
    let rest = &raw[pos..];
    let nl = rest
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or_else(|| panic!("a decoded reply has no line end at {pos}"));
    let line = rest[..nl]
        .strip_suffix(b"\r")
        .unwrap_or_else(|| panic!("a decoded reply's line ends without \\r at {pos}"));
    (line, pos + nl + 1)
}

/// A decimal field of a line the decoder accepted.
fn number(field: &[u8]) -> u64 {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "the decoder accepted {:?} as a number",
                String::from_utf8_lossy(field)
            )
        })
}

fn is_error(status: &Status) -> bool {
    matches!(
        status,
        Status::Error | Status::ClientError(_) | Status::ServerError(_)
    )
}

/// Checks `reply` against `raw`, the bytes it was decoded from (exactly those of the
/// reply), and `tag`, the tag the decoder recorded.
fn check_reply(expect: Expect, reply: &Reply, raw: &[u8], tag: &Tag) {
    if !matches!(reply, Reply::Meta(_)) {
        assert_eq!(tag, &Tag::default(), "a tag for {reply:?}");
    }
    match reply {
        Reply::Status(status) => {
            assert!(
                expect == Expect::Status || is_error(status),
                "{status:?} as the reply to a {expect:?} request"
            );
            // An error line may end a reply that had begun (memcached sends SERVER_ERROR
            // after some values when it runs out of memory mid-reply): the reply is the
            // error, and the error is its last line.
            let before_crlf = raw
                .strip_suffix(b"\r\n")
                .unwrap_or_else(|| panic!("a status reply without its line end"));
            let start = before_crlf
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |nl| nl + 1);
            assert!(
                expect != Expect::Status || start == 0,
                "a status reply is one line"
            );
            let (line, end) = line_at(raw, start);
            assert_eq!(end, raw.len());
            assert_eq!(parse_status(line).as_ref(), Ok(status));
        }
        Reply::Values(values) => {
            assert_eq!(expect, Expect::Values, "values as the reply to {expect:?}");
            let count = values.len();
            assert_eq!(values.is_empty(), count == 0);
            let mut pos = 0;
            let mut seen = 0;
            for (key, item) in values.iter() {
                seen += 1;
                let (header, data_at) = line_at(raw, pos);
                let fields: Vec<&[u8]> = header.split(|&b| b == b' ').collect();
                assert!(
                    (4..=5).contains(&fields.len()) && fields[0] == b"VALUE",
                    "decoded from {:?}",
                    String::from_utf8_lossy(header)
                );
                assert_eq!(key, fields[1], "the key");
                assert_eq!(u64::from(item.flags), number(fields[2]), "the flags");
                let len = number(fields[3]);
                assert_eq!(
                    item.value.len() as u64,
                    len,
                    "a value's length is its header's"
                );
                // 0 is no unique (memcached without CAS, `-C`, gives every item 0).
                let unique = fields.get(4).map(|c| number(c)).filter(|&c| c != 0);
                assert_eq!(item.cas, unique, "the CAS unique");
                let data_end = data_at + item.value.len();
                assert_eq!(
                    &raw[data_at..data_end],
                    item.value.as_slice(),
                    "the value's bytes"
                );
                assert_eq!(&raw[data_end..data_end + 2], b"\r\n");
                pos = data_end + 2;
            }
            assert_eq!(seen, count, "len() is the number of values");
            assert_eq!(&raw[pos..], b"END\r\n", "values end with END");
        }
        Reply::Stats(stats) => {
            assert_eq!(expect, Expect::Stats, "stats as the reply to {expect:?}");
            let mut pos = 0;
            for (name, value) in stats {
                let (line, next) = line_at(raw, pos);
                let rest = line
                    .strip_prefix(b"STAT ")
                    .unwrap_or_else(|| panic!("a stat from {:?}", String::from_utf8_lossy(line)));
                let rest = String::from_utf8_lossy(rest);
                let (n, v) = rest.split_once(' ').unwrap_or((&rest, ""));
                assert_eq!((name.as_str(), value.as_str()), (n, v));
                pos = next;
            }
            assert_eq!(&raw[pos..], b"END\r\n", "stats end with END");
        }
        Reply::Meta(meta) => {
            assert_eq!(expect, Expect::Meta, "a meta reply to {expect:?}");
            let (line, next) = line_at(raw, 0);
            let mut fields = line.split(|&b| b == b' ');
            let code = fields.next().unwrap_or_default();
            // The last O and k tokens are the tag (the decoder refused malformed ones).
            let (mut opaque, mut key) = (None, None);
            for flag in fields.clone() {
                match flag.split_first() {
                    Some((b'O', v)) => opaque = u32::try_from(number(v)).ok(),
                    Some((b'k', v)) => key = Some(v),
                    _ => {}
                }
            }
            assert_eq!(tag, &Tag::new(opaque, key), "the tag of {reply:?}");
            let value = match meta {
                Meta::Value(value) => value,
                simple => {
                    let expected: &[u8] = match simple {
                        Meta::Done => b"HD",
                        Meta::Miss => b"EN",
                        Meta::NotFound => b"NF",
                        Meta::NotStored => b"NS",
                        Meta::Exists => b"EX",
                        Meta::Value(_) => unreachable!(),
                    };
                    assert_eq!(code, expected, "{simple:?}");
                    assert_eq!(next, raw.len(), "a meta reply without a value is one line");
                    return;
                }
            };
            assert_eq!(code, b"VA");
            let len = number(fields.next().unwrap_or_default());
            assert_eq!(
                value.item.value.len() as u64,
                len,
                "a value's length is its header's"
            );
            let (mut flags, mut cas) = (0, None);
            let (mut win, mut stale, mut win_taken) = (false, false, false);
            for flag in fields {
                match flag.split_first() {
                    Some((b'f', v)) => flags = number(v),
                    Some((b'c', v)) => cas = Some(number(v)).filter(|&c| c != 0),
                    Some((b'W', _)) => win = true,
                    Some((b'X', _)) => stale = true,
                    Some((b'Z', _)) => win_taken = true,
                    _ => {}
                }
            }
            assert_eq!(u64::from(value.item.flags), flags, "the flags");
            assert_eq!(value.item.cas, cas, "the CAS unique");
            assert_eq!(
                (value.win, value.stale, value.win_taken),
                (win, stale, win_taken)
            );
            let end = next + value.item.value.len();
            assert_eq!(&raw[next..end], value.item.value.as_slice(), "the value");
            assert_eq!(&raw[end..], b"\r\n", "a meta value ends its reply");
        }
    }
}
