//! A fixed-size set of group numbers: which groups a peer holds.

/// One bit per chunk group.
#[derive(Clone, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    len: u64,
    ones: u64,
}

impl std::fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitmap({}/{})", self.ones, self.len)
    }
}

/// A bitmap received from a peer did not fit the collection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a have-bitmap of {got} bytes for {groups} groups")]
pub struct BitmapError {
    got: usize,
    groups: u64,
}

impl Bitmap {
    /// `len` bits, all clear.
    pub fn new(len: u64) -> Self {
        Self {
            words: vec![0; len.div_ceil(64) as usize],
            len,
            ones: 0,
        }
    }

    /// `len` bits, all set.
    pub fn full(len: u64) -> Self {
        let mut map = Self::new(len);
        map.set_range(0..len);
        map
    }

    /// The number of bits.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether there are no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of set bits.
    pub fn count(&self) -> u64 {
        self.ones
    }

    /// Whether every bit is set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether bit `i` is set (false past the end).
    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; true if it was clear. Bits past the end are ignored.
    pub fn set(&mut self, i: u64) -> bool {
        if i >= self.len {
            return false;
        }
        let word = &mut self.words[(i / 64) as usize];
        let mask = 1 << (i % 64);
        let fresh = *word & mask == 0;
        *word |= mask;
        self.ones += u64::from(fresh);
        fresh
    }

    /// Sets every bit in `range`.
    pub fn set_range(&mut self, range: std::ops::Range<u64>) {
        for i in range {
            self.set(i);
        }
    }

    /// Whether every bit in `range` is set.
    pub fn all(&self, range: std::ops::Range<u64>) -> bool {
        range.end <= self.len && range.clone().all(|i| self.get(i))
    }

    /// The set bits, in order.
    pub fn ones(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// Bytes on the wire: the bits, least significant first, 8 per byte.
    pub fn encode(&self) -> Vec<u8> {
        let bytes = self.len.div_ceil(8) as usize;
        self.words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(bytes)
            .collect()
    }

    /// Reads a bitmap of `len` bits; refused unless exactly the right size with
    /// no bits set past `len`.
    pub fn decode(len: u64, bytes: &[u8]) -> Result<Self, BitmapError> {
        let error = BitmapError {
            got: bytes.len(),
            groups: len,
        };
        if bytes.len() as u64 != len.div_ceil(8) {
            return Err(error);
        }
        let mut map = Self::new(len);
        for (w, chunk) in map.words.iter_mut().zip(bytes.chunks(8)) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_le_bytes(word);
        }
        if let Some(last) = map.words.last()
            && !len.is_multiple_of(64)
            && last >> (len % 64) != 0
        {
            return Err(error);
        }
        map.ones = map.words.iter().map(|w| u64::from(w.count_ones())).sum();
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_counts_and_round_trips() {
        let mut map = Bitmap::new(130);
        assert!(map.set(0));
        assert!(!map.set(0));
        assert!(map.set(129));
        assert!(!map.set(130), "past the end");
        map.set_range(64..70);
        assert_eq!(map.count(), 8);
        assert!(map.all(64..70));
        assert!(!map.all(63..70));
        let back = Bitmap::decode(130, &map.encode()).unwrap();
        assert_eq!(back, map);
        assert_eq!(
            back.ones().collect::<Vec<_>>(),
            [0, 64, 65, 66, 67, 68, 69, 129]
        );
        assert!(Bitmap::full(9).is_full());
    }

    #[test]
    fn wrong_sizes_and_stray_bits_are_refused() {
        assert!(Bitmap::decode(9, &[0]).is_err());
        assert!(Bitmap::decode(9, &[0, 0, 0]).is_err());
        assert!(Bitmap::decode(9, &[0, 2]).is_err(), "bit 9 does not exist");
        assert_eq!(Bitmap::decode(9, &[0xff, 1]).unwrap().count(), 9);
        assert_eq!(Bitmap::decode(0, &[]).unwrap().len(), 0);
    }
}
