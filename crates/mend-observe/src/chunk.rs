//! Compressed point storage for one series: Gorilla encoding (Pelkonen et al., VLDB 2015), as in
//! Prometheus' head chunks.
//!
//! Timestamps are stored as delta-of-delta in a few prefix-coded bucket sizes, values as the XOR with
//! the previous value, reusing the previous window of meaningful bits when it fits. A series sampled
//! at a steady interval with a constant value (an idle process) costs about two bytes per point
//! instead of sixteen; a busy counter a few more. Points are cut into chunks of [`CHUNK_POINTS`], so
//! old points leave a whole chunk at a time and a range read skips chunks outside it.

use std::collections::VecDeque;

/// Points per chunk (Prometheus uses 120 too: an encoding window short enough to decode cheaply,
/// long enough that the raw first point is amortised).
pub const CHUNK_POINTS: u16 = 120;

/// Appends bits most significant first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Unused low bits in the last byte (0 when the last byte is full or there is none).
    free: u32,
}

impl BitWriter {
    /// Writes the `n` low bits of `value` (`n` ≤ 64).
    fn write(&mut self, value: u64, n: u32) {
        let mut left = n;
        while left > 0 {
            if self.free == 0 {
                if self.bytes.len() == self.bytes.capacity() {
                    // Grow by half rather than doubling: a chunk's bytes are shrunk when it is
                    // sealed, and a busy head chunk should not carry up to twice its size meanwhile.
                    let extra = (self.bytes.len() / 2).max(16);
                    self.bytes.reserve_exact(extra);
                }
                self.bytes.push(0);
                self.free = 8;
            }
            let take = left.min(self.free);
            let bits = (value >> (left - take)) & ((1u64 << take) - 1);
            if let Some(last) = self.bytes.last_mut() {
                *last |= (bits as u8) << (self.free - take);
            }
            self.free -= take;
            left -= take;
        }
    }

    fn bit(&mut self, bit: bool) {
        self.write(u64::from(bit), 1);
    }
}

/// Reads what a [`BitWriter`] wrote.
#[derive(Debug, Clone)]
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits.
    at: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Reads `n` bits (`n` ≤ 64); `None` past the end (a corrupt chunk ends the series early).
    fn read(&mut self, n: u32) -> Option<u64> {
        let mut value = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = *self.bytes.get(self.at / 8)?;
            let used = (self.at % 8) as u32;
            let available = 8 - used;
            let take = left.min(available);
            let bits = (u64::from(byte) >> (available - take)) & ((1u64 << take) - 1);
            value = if take == 64 { bits } else { (value << take) | bits };
            self.at += take as usize;
            left -= take;
        }
        Some(value)
    }

    fn bit(&mut self) -> Option<bool> {
        self.read(1).map(|bit| bit == 1)
    }
}

/// Delta-of-delta buckets: (prefix bits, prefix length, payload bits). The 64-bit bucket takes any
/// value, so out-of-order and far-apart timestamps round-trip too.
const BUCKETS: [(u64, u32, u32); 4] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20), (0b1111, 4, 64)];

fn fits_signed(value: i64, bits: u32) -> bool {
    bits >= 64 || (-(1i64 << (bits - 1))..(1i64 << (bits - 1))).contains(&value)
}

fn sign_extend(raw: u64, bits: u32) -> i64 {
    if bits >= 64 {
        return raw as i64;
    }
    let shift = 64 - bits;
    ((raw << shift) as i64) >> shift
}

/// What encoder and decoder both track between points.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    prev_at: i64,
    prev_delta: i64,
    prev_bits: u64,
    /// The current window of meaningful XOR bits: leading and trailing zeros.
    leading: u32,
    trailing: u32,
}

/// A sealed chunk: its bytes and enough to skip it without decoding.
#[derive(Debug, Clone)]
struct Chunk {
    bytes: Box<[u8]>,
    count: u16,
    min_at: i64,
    max_at: i64,
}

/// The chunk being written.
#[derive(Debug, Clone, Default)]
struct HeadChunk {
    bits: BitWriter,
    count: u16,
    min_at: i64,
    max_at: i64,
    cursor: Cursor,
}

impl HeadChunk {
    fn append(&mut self, at: i64, value: f64) {
        let bits = value.to_bits();
        let cursor = &mut self.cursor;
        match self.count {
            0 => {
                self.bits.write(at as u64, 64);
                self.bits.write(bits, 64);
                *cursor = Cursor { prev_at: at, prev_delta: 0, prev_bits: bits, leading: u32::MAX, trailing: 0 };
                self.min_at = at;
                self.max_at = at;
            }
            _ => {
                let delta = at.wrapping_sub(cursor.prev_at);
                let dod = delta.wrapping_sub(cursor.prev_delta);
                if dod == 0 {
                    self.bits.bit(false);
                } else {
                    // The last bucket takes 64 bits, so one always fits.
                    let (prefix, prefix_len, payload) = BUCKETS
                        .iter()
                        .copied()
                        .find(|&(_, _, payload)| fits_signed(dod, payload))
                        .unwrap_or(BUCKETS[3]);
                    self.bits.write(prefix, prefix_len);
                    let mask = if payload >= 64 { u64::MAX } else { (1u64 << payload) - 1 };
                    self.bits.write(dod as u64 & mask, payload);
                }
                cursor.prev_at = at;
                cursor.prev_delta = delta;

                let xor = bits ^ cursor.prev_bits;
                if xor == 0 {
                    self.bits.bit(false);
                } else {
                    self.bits.bit(true);
                    // Five bits hold the leading-zero count, so it is capped at 31.
                    let leading = xor.leading_zeros().min(31);
                    let trailing = xor.trailing_zeros();
                    if cursor.leading != u32::MAX && leading >= cursor.leading && trailing >= cursor.trailing {
                        self.bits.bit(false);
                        let meaningful = 64 - cursor.leading - cursor.trailing;
                        self.bits.write(xor >> cursor.trailing, meaningful);
                    } else {
                        self.bits.bit(true);
                        let meaningful = 64 - leading - trailing;
                        self.bits.write(u64::from(leading), 5);
                        // 64 meaningful bits are written as 0: six bits hold 0..=63.
                        self.bits.write(u64::from(meaningful % 64), 6);
                        self.bits.write(xor >> trailing, meaningful);
                        cursor.leading = leading;
                        cursor.trailing = trailing;
                    }
                }
                cursor.prev_bits = bits;
                self.min_at = self.min_at.min(at);
                self.max_at = self.max_at.max(at);
            }
        }
        self.count += 1;
    }

    fn seal(&mut self) -> Chunk {
        let head = std::mem::take(self);
        Chunk { bytes: head.bits.bytes.into_boxed_slice(), count: head.count, min_at: head.min_at, max_at: head.max_at }
    }
}

/// Decodes one chunk's points.
#[derive(Debug, Clone)]
pub struct ChunkPoints<'a> {
    reader: BitReader<'a>,
    index: u16,
    count: u16,
    cursor: Cursor,
}

impl<'a> ChunkPoints<'a> {
    fn new(bytes: &'a [u8], count: u16) -> Self {
        Self { reader: BitReader::new(bytes), index: 0, count, cursor: Cursor::default() }
    }

    fn decode_next(&mut self) -> Option<(i64, f64)> {
        let reader = &mut self.reader;
        let cursor = &mut self.cursor;
        if self.index == 0 {
            let at = reader.read(64)? as i64;
            let bits = reader.read(64)?;
            *cursor = Cursor { prev_at: at, prev_delta: 0, prev_bits: bits, leading: 0, trailing: 0 };
            return Some((at, f64::from_bits(bits)));
        }
        let dod = if reader.bit()? {
            let mut prefix_len = 1;
            while prefix_len < 4 && reader.bit()? {
                prefix_len += 1;
            }
            let payload = BUCKETS[prefix_len - 1].2;
            sign_extend(reader.read(payload)?, payload)
        } else {
            0
        };
        let delta = cursor.prev_delta.wrapping_add(dod);
        let at = cursor.prev_at.wrapping_add(delta);
        cursor.prev_at = at;
        cursor.prev_delta = delta;

        if reader.bit()? {
            if reader.bit()? {
                cursor.leading = reader.read(5)? as u32;
                let meaningful = match reader.read(6)? as u32 {
                    0 => 64,
                    n => n,
                };
                cursor.trailing = 64u32.checked_sub(cursor.leading + meaningful)?;
            }
            let meaningful = 64 - cursor.leading - cursor.trailing;
            let xor = reader.read(meaningful)? << cursor.trailing;
            cursor.prev_bits ^= xor;
        }
        Some((at, f64::from_bits(cursor.prev_bits)))
    }
}

impl Iterator for ChunkPoints<'_> {
    type Item = (i64, f64);

    fn next(&mut self) -> Option<(i64, f64)> {
        if self.index >= self.count {
            return None;
        }
        let point = self.decode_next();
        // A point that does not decode ends the chunk rather than yielding garbage.
        self.index = if point.is_some() { self.index + 1 } else { self.count };
        point
    }
}

/// A series' points, oldest first, compressed in chunks.
#[derive(Debug, Clone, Default)]
pub struct CompressedPoints {
    sealed: VecDeque<Chunk>,
    head: HeadChunk,
    len: usize,
    /// The point appended last: served without decoding.
    last: Option<(i64, f64)>,
}

impl CompressedPoints {
    /// An empty series.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a point (timestamps in any order), cutting a new chunk after `chunk_points` (at most
    /// [`CHUNK_POINTS`]; a series that keeps fewer points uses smaller chunks, so whole chunks can
    /// leave memory before it holds much more than it keeps).
    pub fn push(&mut self, at: i64, value: f64, chunk_points: u16) {
        if self.head.count >= chunk_points.clamp(1, CHUNK_POINTS) {
            let chunk = self.head.seal();
            self.sealed.push_back(chunk);
        }
        self.head.append(at, value);
        self.len += 1;
        self.last = Some((at, value));
    }

    /// Drops whole sealed chunks from the front while `drop(points held, chunk's points, chunk's newest
    /// timestamp)` says so. Returns the number of points dropped.
    pub fn drop_front_chunks(&mut self, mut drop: impl FnMut(usize, usize, i64) -> bool) -> usize {
        let mut dropped = 0;
        while let Some(front) = self.sealed.front() {
            if !drop(self.len, usize::from(front.count), front.max_at) {
                break;
            }
            dropped += usize::from(front.count);
            self.len -= usize::from(front.count);
            self.sealed.pop_front();
        }
        dropped
    }

    /// Number of points held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no point is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The point appended last.
    pub fn last(&self) -> Option<(i64, f64)> {
        self.last
    }

    /// Points in append order, skipping the first `skip`, with timestamps in `[start, end]`.
    /// Chunks wholly outside the range are not decoded.
    pub fn range(&self, mut skip: usize, start: i64, end: i64) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        let head = (&self.head.bits.bytes[..], self.head.count, self.head.min_at, self.head.max_at);
        let chunks = self.sealed.iter().map(|c| (&c.bytes[..], c.count, c.min_at, c.max_at)).chain([head]);
        for (bytes, count, min_at, max_at) in chunks {
            let count_usize = usize::from(count);
            if count == 0 || skip >= count_usize || max_at < start || min_at > end {
                skip = skip.saturating_sub(count_usize);
                continue;
            }
            out.extend(ChunkPoints::new(bytes, count).skip(skip).filter(|&(at, _)| at >= start && at <= end));
            skip = 0;
        }
        out
    }

    /// Bytes of encoded points (for measurements and tests).
    pub fn encoded_bytes(&self) -> usize {
        self.sealed.iter().map(|c| c.bytes.len()).sum::<usize>() + self.head.bits.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(points: &CompressedPoints) -> Vec<(i64, u64)> {
        points.range(0, i64::MIN, i64::MAX).into_iter().map(|(at, v)| (at, v.to_bits())).collect()
    }

    #[test]
    fn a_steady_idle_series_costs_about_two_bytes_a_point() {
        let mut points = CompressedPoints::new();
        // An hour at one sample a second with a few milliseconds of jitter and a constant value.
        for i in 0..3600_i64 {
            points.push(1_700_000_000_000 + i * 1000 + (i * 7919) % 5, 6_291_456.0, CHUNK_POINTS);
        }
        assert_eq!(points.len(), 3600);
        let per_point = points.encoded_bytes() as f64 / 3600.0;
        assert!(per_point < 2.5, "{per_point:.2} bytes per point");
        // Perfectly regular timestamps: a bit for the time and a bit for the value, plus each chunk's
        // raw first point.
        let mut regular = CompressedPoints::new();
        for i in 0..3600_i64 {
            regular.push(i * 1000, 1.0, CHUNK_POINTS);
        }
        assert!(regular.encoded_bytes() < 3600 / 2, "{} bytes", regular.encoded_bytes());
    }

    #[test]
    fn special_values_and_extreme_timestamps_round_trip() {
        let input = [
            (0, f64::NAN),
            (i64::MAX, f64::INFINITY),
            (i64::MIN, f64::NEG_INFINITY),
            (5, -0.0),
            (5, 0.0),
            (-3, f64::MIN_POSITIVE),
            (1 << 40, f64::MAX),
            (7, f64::from_bits(0x7ff8_0000_0000_0002)), // A NaN with a payload (Prometheus' stale marker).
        ];
        let mut points = CompressedPoints::new();
        for (at, value) in input {
            points.push(at, value, 3);
        }
        let expected: Vec<(i64, u64)> = input.iter().map(|&(at, v)| (at, v.to_bits())).collect();
        assert_eq!(all(&points), expected);
    }

    #[test]
    fn whole_chunks_leave_from_the_front_and_ranges_skip() {
        let mut points = CompressedPoints::new();
        for i in 0..1000_i64 {
            points.push(i, i as f64, CHUNK_POINTS);
        }
        assert_eq!(points.drop_front_chunks(|_, _, newest| newest < 500), 480);
        assert_eq!(points.len(), 520);
        let got = points.range(10, 600, 605);
        assert_eq!(got, (600..=605).map(|i| (i, i as f64)).collect::<Vec<_>>());
        assert_eq!(points.range(515, i64::MIN, i64::MAX).len(), 5);
        assert_eq!(points.last(), Some((999, 999.0)));
    }

    proptest! {
        #[test]
        fn any_points_round_trip(chunk in 1u16..=200, input in proptest::collection::vec((any::<i64>(), any::<u64>()), 0..400),
                                 jitter in proptest::collection::vec((-3_000i64..3_000, 0u8..4), 0..400)) {
            let mut points = CompressedPoints::new();
            let mut expected = Vec::new();
            // Mixed: arbitrary points, and runs of near-regular ones with repeated or close values.
            let mut at = 1_700_000_000_000i64;
            let mut value = 1.5f64;
            for (i, &(raw_at, raw_bits)) in input.iter().enumerate() {
                let (step, kind) = jitter.get(i).copied().unwrap_or((0, 0));
                let point = match kind {
                    0 => (raw_at, raw_bits),
                    1 => { at += 1000 + step; (at, value.to_bits()) }
                    2 => { at += 15_000; value += 0.25; (at, value.to_bits()) }
                    _ => { at -= step.abs(); (at, raw_bits & 0xffff_0000_0000_ffff) }
                };
                points.push(point.0, f64::from_bits(point.1), chunk);
                expected.push(point);
            }
            prop_assert_eq!(all(&points), expected);
        }
    }
}
