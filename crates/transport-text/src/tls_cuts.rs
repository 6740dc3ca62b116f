//! Where a stream of requests is cut into TLS records (feature `tls`): a record holds whole
//! commands, at most [`RECORD`] bytes of them, or one larger command alone, and so always
//! ends where a command ends.
//!
//! memcached before 1.6.39 reads the rest of a value that did not come whole with its
//! command line by asking OpenSSL for exactly that many bytes; when the record holding the
//! value's last bytes also holds the next command, OpenSSL keeps that command, and memcached
//! waits for the socket to be readable, which it is not: the command (a `set_many`'s next
//! set, a request written behind a set) is never answered (memcached's fix, "tls: fix
//! potential hang when pipelining sets", 1.6.39; an outside review got a timeout on each of
//! 21 `set_many` calls of a 20,000-byte value and a small one, against 1.6.18). A record
//! that ends with its last command keeps nothing back. memcached reads a new record only
//! when what it read before holds no whole command, into a 16 KB buffer that then holds at
//! most the start of one command: a record of whole commands up to [`RECORD`] fits what is
//! left of it whole, so OpenSSL keeps nothing back there either.
//!
//! One command per record was the first way (it is enough too), but memcached 1.6.18 then
//! reads, decrypts and parses each record on its own pass through its event loop: a
//! blocking `Cache` over TLS took 0.84 to 1.30 ms per `set_many` of 100 values of 100
//! bytes and 0.86 to 1.13 ms per `delete_many` of their keys, against 0.23 to 0.48 ms and
//! 0.11 to 0.13 ms with whole commands joined into records (`cargo run --release -p
//! newcache-tests --features tls --example tls_batches`, three rounds of each build, one
//! build after the other, on a 2-core VM with other work running).
//!
//! rustls makes records of what each `write` hands it (cut at its 16 KB limit), never
//! joining two writes, so handing it one record's worth at a time is enough. Sans-IO: the
//! writers ask [`Cuts::piece`] how much to hand over, and tell [`Cuts::advance`] what
//! rustls took.

/// The most bytes of whole commands one record holds (a command longer than this goes in
/// records of its own, the last one ending where it ends). Well under memcached's 16 KB
/// read buffer, so a record fits beside the start of a command left in it (a multi-get line
/// that came in two writes).
pub(crate) const RECORD: usize = 4096;

/// The longest command line kept to read a data block's length from (a storage command's
/// line is a verb, a key of up to 250 bytes and a few numbers); longer lines (multi-gets)
/// carry no data block.
const MAX_STORAGE_LINE: usize = 512;

/// Where the request stream is: in a command's line, or in its data block.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cuts {
    /// Bytes of the current data block still to come, its closing `\r\n` included (0 in a
    /// command line).
    data: usize,
    /// The current command line so far, up to [`MAX_STORAGE_LINE`] bytes.
    line: Vec<u8>,
}

impl Cuts {
    /// How many bytes of `buf` (the stream's next bytes) to hand to TLS now, as one record:
    /// mid-command, the rest of that command (all of `buf` when it does not end in it); at a
    /// command's start, the whole commands that fit in [`RECORD`] bytes, or the first one
    /// alone when it is longer or does not end in `buf`.
    pub(crate) fn piece(&self, buf: &[u8]) -> usize {
        let mut ahead = self.clone();
        let started = ahead.at_start();
        let first = ahead.scan(buf, true);
        if !started || first > RECORD || !ahead.at_start() {
            return first;
        }
        // Whole commands after it while they fit (what `ahead` holds past the last one that
        // fits is not used).
        let mut end = first;
        while let Some(rest) = buf.get(end..).filter(|r| !r.is_empty()) {
            let next = ahead.scan(rest, true);
            if !ahead.at_start() || end.saturating_add(next) > RECORD {
                break;
            }
            end += next;
        }
        end
    }

    /// Whether the stream is at a command's start (not in a line, not in a data block).
    fn at_start(&self) -> bool {
        self.data == 0 && self.line.is_empty()
    }

    /// Takes note that the stream's next bytes, `sent`, were handed to TLS.
    pub(crate) fn advance(&mut self, sent: &[u8]) {
        self.scan(sent, false);
    }

    /// Moves over `buf`; with `stop`, just past the first command's end. The bytes moved
    /// over.
    fn scan(&mut self, buf: &[u8], stop: bool) -> usize {
        let mut at = 0;
        while let Some(rest) = buf.get(at..).filter(|r| !r.is_empty()) {
            if self.data > 0 {
                let n = self.data.min(rest.len());
                self.data -= n;
                at += n;
                if self.data == 0 && stop {
                    return at;
                }
                continue;
            }
            match memchr::memchr(b'\n', rest) {
                None => {
                    self.keep(rest);
                    return buf.len();
                }
                Some(end) => {
                    let line = rest.get(..=end).unwrap_or(rest);
                    self.keep(line);
                    at += line.len();
                    self.data = data_block(&self.line);
                    self.line.clear();
                    if self.data == 0 && stop {
                        return at;
                    }
                }
            }
        }
        at
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_STORAGE_LINE.saturating_sub(self.line.len());
        self.line
            .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
    }
}

/// Hands `buf` to `conn` one record's worth at a time ([`Cuts`]), as far as rustls takes it
/// (its buffer of unsent records is bounded): the bytes taken.
pub(crate) fn hand_over(
    conn: &mut rustls::ClientConnection,
    cuts: &mut Cuts,
    buf: &[u8],
) -> std::io::Result<usize> {
    let mut taken = 0;
    while let Some(rest) = buf.get(taken..).filter(|r| !r.is_empty()) {
        let piece = rest.get(..cuts.piece(rest)).unwrap_or(rest);
        let n = std::io::Write::write(&mut conn.writer(), piece)?;
        cuts.advance(piece.get(..n).unwrap_or_default());
        taken += n;
        if n < piece.len() {
            break;
        }
    }
    Ok(taken)
}

/// The length of the data block that follows a command line (its `\r\n` included), or 0:
/// meta `ms <key> <datalen> ...`; classic `set|add|replace|append|prepend|cas <key>
/// <flags> <exptime> <bytes> ...`.
fn data_block(line: &[u8]) -> usize {
    let mut words = line
        .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .filter(|w| !w.is_empty());
    let size = match words.next() {
        Some(b"ms") => words.nth(1),
        Some(b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas") => words.nth(3),
        _ => None,
    };
    size.and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(0, |n| n.saturating_add(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces `stream` is handed over in, `chunk` bytes offered at a time.
    fn pieces(stream: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let mut cuts = Cuts::default();
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let offered = &stream[at..at.saturating_add(chunk).min(stream.len())];
            let n = cuts.piece(offered);
            assert!(n > 0 && n <= offered.len());
            cuts.advance(&offered[..n]);
            out.push(offered[..n].to_vec());
            at += n;
        }
        out
    }

    /// Where each command of `stream` ends, found the plain way: a line, then its data
    /// block when it has one.
    fn command_ends(stream: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let line_end = at + stream[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
            at = line_end + data_block(&stream[..line_end][at..]);
            ends.push(at);
        }
        ends
    }

    /// What memcached needs of the records: one holding bytes of two commands starts and
    /// ends where commands do and holds at most `RECORD` bytes (so no value that began in
    /// an earlier record ends in one that goes on, and each fits memcached's buffer).
    fn assert_safe(stream: &[u8], got: &[Vec<u8>]) {
        assert_eq!(got.concat(), stream);
        let ends = command_ends(stream);
        let starts: Vec<usize> = std::iter::once(0).chain(ends.iter().copied()).collect();
        let mut at = 0;
        for piece in got {
            let (from, to) = (at, at + piece.len());
            at = to;
            let inner_ends = ends.iter().filter(|&&e| e > from && e < to).count();
            if inner_ends > 0 {
                assert!(
                    starts.contains(&from),
                    "a record of two commands starts mid-command at {from}"
                );
                assert!(
                    ends.contains(&to),
                    "a record of two commands ends mid-command at {to}"
                );
                assert!(
                    piece.len() <= RECORD,
                    "a record of two commands holds {} bytes",
                    piece.len()
                );
            }
        }
    }

    #[test]
    fn small_commands_share_a_record_and_a_larger_one_goes_alone() {
        let mut stream = b"mg a v\r\nms k 1 T60 q\r\nx\r\n".to_vec();
        stream.extend_from_slice(b"ms big 20000 T60 q\r\n");
        stream.extend_from_slice(&[b'v'; 20_000]);
        stream.extend_from_slice(b"\r\nms k 1 T60 q\r\nx\r\nmg a v\r\nmn\r\n");
        let got = pieces(&stream, usize::MAX);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], b"mg a v\r\nms k 1 T60 q\r\nx\r\n");
        assert!(got[1].starts_with(b"ms big") && got[1].ends_with(b"v\r\n"));
        assert_eq!(got[2], b"ms k 1 T60 q\r\nx\r\nmg a v\r\nmn\r\n");
        assert_safe(&stream, &got);
    }

    #[test]
    fn a_record_of_whole_commands_stops_before_the_one_that_would_pass_the_limit() {
        // 1,000 deletes of 16 to 18 bytes: records of whole commands just under RECORD.
        let stream: Vec<u8> = (0..1000)
            .flat_map(|i| format!("delete k{i}\r\n").into_bytes())
            .collect();
        let got = pieces(&stream, usize::MAX);
        assert_safe(&stream, &got);
        for piece in &got[..got.len() - 1] {
            assert!(piece.len() > RECORD - 20, "{}", piece.len());
        }
        // A set and an `mn` that fill a record exactly: the next `mn` starts another.
        let value = vec![b'x'; RECORD - 22];
        let mut stream = b"set k 0 0 4074\r\n".to_vec();
        assert_eq!(stream.len() + value.len() + 2, RECORD - 4);
        stream.extend_from_slice(&value);
        stream.extend_from_slice(b"\r\nmn\r\nmn\r\n");
        let got = pieces(&stream, usize::MAX);
        assert_eq!(got.len(), 2);
        assert!(got[0].ends_with(b"x\r\nmn\r\n"));
        assert_eq!(got[1], b"mn\r\n");
    }

    #[test]
    fn a_value_holding_line_ends_is_skipped_by_its_length() {
        // A 12-byte value that looks like a line end and a command, then a command whose
        // value passes the limit: the cut comes after the 12 bytes, not after "ab".
        let mut stream = b"set k 0 0 12\r\nab\r\nset x 0 \r\n".to_vec();
        let first = stream.len();
        stream.extend_from_slice(format!("set big 0 0 {RECORD}\r\n").as_bytes());
        stream.extend_from_slice(&vec![b'\n'; RECORD]);
        stream.extend_from_slice(b"\r\n");
        let got = pieces(&stream, usize::MAX);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), first);
        assert_safe(&stream, &got);
    }

    #[test]
    fn offered_in_any_chunks_the_records_stay_safe() {
        let cas = b"cas key 1 2 30 99 noreply\r\n";
        let mut stream = cas.to_vec();
        stream.extend_from_slice(&[b'\n'; 30]);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(b"ms k2 3 q\r\nabc\r\nmn\r\n");
        stream.extend_from_slice(format!("ms big {} q\r\n", RECORD + 100).as_bytes());
        stream.extend_from_slice(&vec![b'v'; RECORD + 100]);
        stream.extend_from_slice(b"\r\n");
        for i in 0..300 {
            stream.extend_from_slice(format!("ms s{i} 2 q\r\nab\r\n").as_bytes());
        }
        for chunk in (1..80).chain([1000, 4095, 4096, 4097, 9000, usize::MAX]) {
            let got = pieces(&stream, chunk);
            assert_safe(&stream, &got);
        }
    }

    #[test]
    fn lines_without_a_data_block_and_bad_sizes_carry_none() {
        for line in [
            &b"mg k v\r\n"[..],
            b"get a b c\r\n",
            b"ms k\r\n",
            b"set k 0 0\r\n",
            b"set k 0 0 x\r\n",
            b"delete k\r\n",
        ] {
            assert_eq!(data_block(line), 0, "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(data_block(b"ms k 5 T1\r\n"), 7);
        assert_eq!(data_block(b"prepend k 0 0 3\r\n"), 5);
    }
}
