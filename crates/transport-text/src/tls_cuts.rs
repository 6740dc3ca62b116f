//! Where a stream of requests is cut into TLS records (feature `tls`): every command ends a
//! record, so that no record holds the end of a value and the start of the next command.
//!
//! memcached before 1.6.39 reads a value's last bytes by asking OpenSSL for exactly that
//! many; when the same record also holds the next command, OpenSSL keeps that command,
//! and memcached waits for the socket to be readable, which it is not: the command (a
//! `set_many`'s next set, a request written behind a set) is never answered (memcached's
//! fix, "tls: fix potential hang when pipelining sets", 1.6.39; an outside review got a
//! timeout on each of 21 `set_many` calls of a 20,000-byte value and a small one, against
//! 1.6.18). rustls makes records of what each `write` hands it, never joining two writes,
//! so handing it one command at a time is enough. Sans-IO: the writers ask [`Cuts::piece`]
//! how much to hand over, and tell [`Cuts::advance`] what rustls took.

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
    /// How many bytes of `buf` (the stream's next bytes) to hand to TLS now: up to the end
    /// of the command under way, or all of `buf` when it does not end in it.
    pub(crate) fn piece(&self, buf: &[u8]) -> usize {
        self.clone().scan(buf, true)
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

/// Hands `buf` to `conn` one command at a time ([`Cuts`]), as far as rustls takes it (its
/// buffer of unsent records is bounded): the bytes taken.
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

    #[test]
    fn every_command_ends_a_piece_values_included() {
        let value = vec![b'v'; 20_000];
        let mut stream = b"ms big 20000 T60 q\r\n".to_vec();
        stream.extend_from_slice(&value);
        stream.extend_from_slice(b"\r\nms k 1 T60 q\r\nx\r\nmg a v\r\nmn\r\n");
        let got = pieces(&stream, usize::MAX);
        assert_eq!(got.len(), 4);
        assert!(got[0].starts_with(b"ms big") && got[0].ends_with(b"v\r\n"));
        assert_eq!(got[1], b"ms k 1 T60 q\r\nx\r\n");
        assert_eq!(got[2], b"mg a v\r\n");
        assert_eq!(got[3], b"mn\r\n");
    }

    #[test]
    fn a_value_holding_line_ends_is_skipped_by_its_length() {
        // A 12-byte value that looks like a line end and a command.
        let stream = b"set k 0 0 12\r\nab\r\nset x 0 \r\nget k\r\n";
        let got = pieces(stream, usize::MAX);
        assert_eq!(
            got,
            [
                b"set k 0 0 12\r\nab\r\nset x 0 \r\n".to_vec(),
                b"get k\r\n".to_vec()
            ]
        );
    }

    #[test]
    fn offered_in_small_chunks_the_cuts_stay_at_the_commands_ends() {
        let cas = b"cas key 1 2 30 99 noreply\r\n";
        let ms = b"ms k2 3 q\r\nabc\r\n";
        let mut stream = cas.to_vec();
        stream.extend_from_slice(&[b'\n'; 30]);
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(ms);
        stream.extend_from_slice(b"mn\r\n");
        for chunk in 1..40 {
            let got = pieces(&stream, chunk);
            let joined: Vec<u8> = got.concat();
            assert_eq!(joined, stream, "{chunk}");
            // The ends of the pieces include every command's end.
            let mut ends = Vec::new();
            let mut at = 0;
            for p in &got {
                at += p.len();
                ends.push(at);
            }
            let first = cas.len() + 32;
            for end in [first, first + ms.len(), stream.len()] {
                assert!(ends.contains(&end), "{chunk}: {end} not in {ends:?}");
            }
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
