//! Whole-word loads for the matcher's word comparisons and hashes: equal words are found by
//! comparing eight bytes at a time, with no `memcmp` call (inside WebAssembly `memcmp` is a
//! byte loop with an epoch check on every byte; natively it is as fast as the standard
//! comparison).

/// `a == b` by whole-word loads, as `memcmp` does it: eight bytes per step, then the last
/// eight (overlapping); shorter words by two overlapping four- or two-byte loads. No loop runs
/// for a word of up to sixteen bytes.
#[inline]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if load::<8>(a, i) != load::<8>(b, i) {
                return false;
            }
            i += 8;
        }
        return load::<8>(a, n - 8) == load::<8>(b, n - 8);
    }
    if n >= 4 {
        return load::<4>(a, 0) == load::<4>(b, 0) && load::<4>(a, n - 4) == load::<4>(b, n - 4);
    }
    if n >= 2 {
        return load::<2>(a, 0) == load::<2>(b, 0) && load::<2>(a, n - 2) == load::<2>(b, n - 2);
    }
    a == b
}

/// `N` bytes of `s` from `at`, as one little-endian integer.
#[inline]
pub(crate) fn load<const N: usize>(s: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w[..N].copy_from_slice(&s[at..at + N]);
    u64::from_le_bytes(w)
}

/// The up to eight bytes of `s` as one little-endian integer, zero above them, by two
/// overlapping fixed-size loads (the bytes they share are the same, so OR-ing them is
/// exact): no loop and no variable-length `memcpy`, which inside WebAssembly is a call out
/// of the guest.
#[inline]
pub(crate) fn load_short(s: &[u8]) -> u64 {
    let n = s.len();
    debug_assert!(n <= 8);
    match n {
        8 => load::<8>(s, 0),
        4..=7 => load::<4>(s, 0) | load::<4>(s, n - 4) << (8 * (n - 4)),
        2..=3 => load::<2>(s, 0) | load::<2>(s, n - 2) << (8 * (n - 2)),
        1 => u64::from(s[0]),
        _ => 0,
    }
}

/// One in every byte.
pub(crate) const LANES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte.
pub(crate) const HIGH: u64 = 0x80 * LANES;

/// The first `b` in `s` at or after `from`, eight bytes per step (inside WebAssembly the
/// standard search takes four, with an epoch check each, and is a call).
#[inline]
pub(crate) fn find_byte(s: &[u8], from: usize, b: u8) -> Option<usize> {
    let mut i = from;
    while i + 8 <= s.len() {
        let x = load::<8>(s, i) ^ (u64::from(b) * LANES);
        // the lowest zero byte of `x` is flagged exactly (a borrow only runs upward)
        let zero = x.wrapping_sub(LANES) & !x & HIGH;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s.get(i..)?.iter().position(|&c| c == b).map(|p| i + p)
}

/// The first occurrence of `needle` (not empty) in `s` at or after `from`.
#[inline]
pub(crate) fn find_bytes(s: &[u8], mut from: usize, needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    loop {
        let at = find_byte(s, from, first)?;
        let end = at + needle.len();
        if end <= s.len() && s[at + 1..end] == *rest {
            return Some(at);
        }
        from = at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_searches_agree_with_the_standard_ones() {
        let text = "Indomethacin (IDM) and (DA); IDM-treated, ±IDMS (IDM)\nx(";
        let b = text.as_bytes();
        for from in 0..=b.len() {
            for c in [b'(', b')', b'I', b'\n', b'z', 0xb1] {
                assert_eq!(find_byte(b, from, c), b[from..].iter().position(|&x| x == c).map(|p| p + from), "{c} from {from}");
            }
            for needle in ["IDM", "(", "x(", "IDMS (IDM)", "zz"] {
                let want = b[from..].windows(needle.len()).position(|w| w == needle.as_bytes()).map(|p| p + from);
                assert_eq!(find_bytes(b, from, needle.as_bytes()), want, "{needle} from {from}");
            }
        }
    }

    #[test]
    fn short_loads_are_the_bytes_little_endian() {
        let bytes = b"\x01\x02\x03\x04\x05\x06\x07\x08\xff";
        for n in 0..=8 {
            let want = bytes[..n].iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            assert_eq!(load_short(&bytes[..n]), want, "{n} bytes");
            assert_eq!(load_short(&bytes[9 - n..]), bytes[9 - n..].iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
        }
    }
}
