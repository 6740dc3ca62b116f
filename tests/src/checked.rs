//! Values that carry their own key, version and checksum, for the runs that must catch any
//! wrong value whatever comes back (the fault-proxy tests and the soak): another key's
//! value, an older version, a torn one. And the small random source those runs draw from.

/// FNV-1a, 64 bits.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The value the segment-duplication tests store under their `k`th key of `owner`: its
/// name, then line ends (20 to 219 of them), so that a value with bytes of other replies in
/// it often still ends on a line end, as only what follows it can show
/// (`Faults::duplicate_part`).
pub fn line_end_value(owner: usize, k: usize) -> Vec<u8> {
    let mut v = format!("{owner}:{k}|").into_bytes();
    v.extend(b"\r\n".repeat(20 + (owner * 7 + k * 13) % 200));
    v
}

/// `<key>|<version>|<padding>|<checksum>`: the value knows its key and version.
pub fn value_of(key: &[u8], version: u64, pad: usize) -> Vec<u8> {
    let mut v = key.to_vec();
    v.extend_from_slice(format!("|{version}|").as_bytes());
    v.resize(v.len() + pad, b'x');
    let sum = checksum(&v);
    v.extend_from_slice(format!("|{sum:016x}").as_bytes());
    v
}

/// The key and version a value names, or why it is not one of [`value_of`]'s.
pub fn parse_value(v: &[u8]) -> Result<(&[u8], u64), String> {
    let cut = v
        .iter()
        .rposition(|&b| b == b'|')
        .ok_or("no checksum field")?;
    let (body, sum) = (
        v.get(..cut).unwrap_or_default(),
        v.get(cut + 1..).unwrap_or_default(),
    );
    let sum = std::str::from_utf8(sum)
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or("checksum not hex")?;
    if checksum(body) != sum {
        return Err(format!(
            "corrupt value: the checksum fails ({} bytes)",
            v.len()
        ));
    }
    let mut fields = body.splitn(3, |&b| b == b'|');
    let key = fields.next().ok_or("no key")?;
    let version = fields
        .next()
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|s| s.parse().ok())
        .ok_or("bad version")?;
    Ok((key, version))
}

/// xorshift64*.
pub struct Rng(pub u64);

impl Rng {
    /// The next draw.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A draw below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_names_its_key_and_version_and_any_change_is_caught() {
        let v = value_of(b"k:1", 42, 10);
        assert_eq!(parse_value(&v).unwrap(), (&b"k:1"[..], 42));
        let mut torn = v.clone();
        torn[1] ^= 1;
        assert!(parse_value(&torn).unwrap_err().contains("checksum fails"));
        assert!(parse_value(&v[..v.len() - 1]).is_err());
        assert!(parse_value(b"no bars").is_err());
    }
}
