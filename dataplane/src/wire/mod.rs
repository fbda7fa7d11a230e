//! Packet parsing and building: zero-copy views over packet bytes.
//!
//! Modelled on smoltcp's `wire` module. Every protocol exposes a view
//! `Packet<T: AsRef<[u8]>>` (or `Frame<T>` for Ethernet) with:
//!
//! * `new_unchecked(buf)` — wraps the bytes without looking at them;
//! * `new_checked(buf)` — validates lengths (and length-like fields such as
//!   the IPv4 IHL) once, so that every accessor afterwards is bounds-safe
//!   whatever the byte content;
//! * `into_inner()` — gives the buffer back;
//! * cheap accessors, and setters when `T: AsMut<[u8]>` as well.
//!
//! Variable-length accessors (payloads, options) also clamp their ranges to
//! the buffer, so a setter that rewrites a length field cannot make a later
//! accessor panic. Nothing in this module allocates, and nothing uses
//! `unsafe`.
//!
//! Builders (`emit*`) write into a caller-provided `&mut [u8]` and return the
//! number of bytes written, or [`WireError::Truncated`] when the output
//! buffer is too small.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod l4;

/// Why a packet could not be parsed (or built). Small and `Copy` so it can
/// be used directly as a drop reason; [`WireError::index`] indexes a counter
/// array of length [`WireError::COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header (or an output buffer is too
    /// small for what a builder has to write).
    #[error("truncated")]
    Truncated,
    /// The IP version field is not the expected one.
    #[error("bad version")]
    BadVersion,
    /// A header-length field is invalid (e.g. IPv4 IHL < 5).
    #[error("bad header length")]
    BadHeaderLen,
    /// A total-length field is inconsistent with the buffer.
    #[error("bad length")]
    BadLength,
    /// A checksum did not verify.
    #[error("bad checksum")]
    BadChecksum,
    /// Well-formed but not something we handle (e.g. non-Ethernet/IPv4 ARP).
    #[error("unsupported")]
    Unsupported,
    /// Otherwise malformed (e.g. too many IPv6 extension headers).
    #[error("malformed")]
    Malformed,
}

impl WireError {
    /// Number of variants.
    pub const COUNT: usize = 7;

    /// Every variant, in [`WireError::index`] order.
    pub const ALL: [WireError; WireError::COUNT] = [
        WireError::Truncated,
        WireError::BadVersion,
        WireError::BadHeaderLen,
        WireError::BadLength,
        WireError::BadChecksum,
        WireError::Unsupported,
        WireError::Malformed,
    ];

    /// snake_case name, suitable as a metrics label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadVersion => "bad_version",
            WireError::BadHeaderLen => "bad_header_len",
            WireError::BadLength => "bad_length",
            WireError::BadChecksum => "bad_checksum",
            WireError::Unsupported => "unsupported",
            WireError::Malformed => "malformed",
        }
    }

    /// Dense index in `0..COUNT`, equal to the position in [`WireError::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Read a big-endian u16 at `at`. Callers guarantee `at + 2 <= buf.len()`.
#[inline]
pub(crate) fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Write a big-endian u16 at `at`.
#[inline]
pub(crate) fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Read a big-endian u32 at `at`.
#[inline]
pub(crate) fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Write a big-endian u32 at `at`.
#[inline]
pub(crate) fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Copy `N` bytes starting at `at` into an array.
#[inline]
pub(crate) fn get_array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_index_and_names() {
        for (i, e) in WireError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert!(!e.as_str().is_empty());
            assert!(e
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        assert_eq!(WireError::Truncated.as_str(), "truncated");
        assert_eq!(WireError::BadChecksum.to_string(), "bad checksum");
        let mut names: Vec<_> = WireError::ALL.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), WireError::COUNT);
    }
}
