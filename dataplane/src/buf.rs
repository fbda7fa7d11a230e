//! The buffer a packet lives in, as the packet logic sees it.
//!
//! Packet code is written against [`PacketBuf`], so it runs the same on a DPDK mbuf
//! (`dpdk::Mbuf`) and on [`TestBuf`], a plain vector with headroom used by unit tests.

/// The trait lives in the DPDK wrapper crate, which implements it for its `Mbuf`; it is
/// re-exported here, where the packet code uses it.
pub use ferry_dpdk::buf::PacketBuf;

/// A heap buffer with fixed headroom, for tests and tools (never on the hot path).
#[derive(Clone, Debug)]
pub struct TestBuf {
    storage: Vec<u8>,
    start: usize,
    end: usize,
    /// What [`PacketBuf::ip_cksum_good`] says (as a NIC with the offload would).
    pub ip_cksum_good: bool,
    /// What [`PacketBuf::contiguous`] denies: the first segment of a chain, as a PMD hands
    /// over a frame larger than one mbuf (`data` is that segment).
    pub chained: bool,
}

impl TestBuf {
    /// Headroom and capacity like a default DPDK mbuf (128 + 2048).
    pub fn new(bytes: &[u8]) -> Self {
        let head = 128;
        let mut storage = vec![0u8; head + 2048.max(bytes.len())];
        storage[head..head + bytes.len()].copy_from_slice(bytes);
        TestBuf {
            storage,
            start: head,
            end: head + bytes.len(),
            ip_cksum_good: false,
            chained: false,
        }
    }
}

impl TestBuf {
    /// Make the buffer hold exactly `bytes` again (same headroom), without allocating.
    pub fn reset(&mut self, bytes: &[u8]) {
        let head = 128;
        self.start = head;
        self.end = head + bytes.len().min(self.storage.len() - head);
        let n = self.end - self.start;
        self.storage[head..head + n].copy_from_slice(&bytes[..n]);
    }
}

impl PacketBuf for TestBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.end]
    }
    #[inline]
    fn ip_cksum_good(&self) -> bool {
        self.ip_cksum_good
    }
    #[inline]
    fn contiguous(&self) -> bool {
        !self.chained
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn trim(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.end -= n;
        true
    }
    fn append(&mut self, n: usize) -> bool {
        if self.end + n > self.storage.len() {
            return false;
        }
        self.end += n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testbuf_grows_and_shrinks_within_bounds() {
        let mut b = TestBuf::new(&[1, 2, 3]);
        assert!(b.prepend(2));
        assert_eq!(b.data().len(), 5);
        assert_eq!(&b.data()[2..], &[1, 2, 3]);
        assert!(b.adj(2));
        assert!(b.trim(1));
        assert_eq!(b.data(), &[1, 2]);
        assert!(!b.trim(3));
        assert!(!b.prepend(1000));
        assert!(b.set_len(10));
        assert_eq!(b.data().len(), 10);
        assert!(!b.append(1 << 20));
    }
}
