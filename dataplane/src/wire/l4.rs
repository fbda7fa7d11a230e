//! Transport-layer helpers: port extraction for flow hashing, and minimal
//! UDP / TCP views.
//!
//! [`ports`] reads the first four bytes of TCP, UDP and SCTP headers, which
//! hold the source and destination ports in all three.

use super::checksum;
use super::{get_u16, get_u32, put_u16, WireError};

/// Protocol number: TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number: UDP.
pub const PROTO_UDP: u8 = 17;
/// Protocol number: SCTP.
pub const PROTO_SCTP: u8 = 132;

/// `(src_port, dst_port)` for TCP/UDP/SCTP; `None` for other protocols or
/// if `l4` is shorter than 4 bytes.
#[inline]
pub fn ports(proto: u8, l4: &[u8]) -> Option<(u16, u16)> {
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP if l4.len() >= 4 => {
            Some((get_u16(l4, 0), get_u16(l4, 2)))
        }
        _ => None,
    }
}

/// Minimal UDP view (RFC 768).
pub mod udp {
    use super::*;

    /// UDP header length.
    pub const HEADER_LEN: usize = 8;

    mod field {
        pub const SRC_PORT: usize = 0;
        pub const DST_PORT: usize = 2;
        pub const LENGTH: usize = 4;
        pub const CHECKSUM: usize = 6;
    }

    /// A view over a UDP datagram.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Packet<T: AsRef<[u8]>> {
        buffer: T,
    }

    impl<T: AsRef<[u8]>> Packet<T> {
        /// Wrap without validation.
        #[inline]
        pub const fn new_unchecked(buffer: T) -> Self {
            Packet { buffer }
        }

        /// Wrap after checking `len >= 8` (`Truncated`) and
        /// `8 <= length field <= len` (`BadLength`).
        pub fn new_checked(buffer: T) -> Result<Self, WireError> {
            let b = buffer.as_ref();
            if b.len() < HEADER_LEN {
                return Err(WireError::Truncated);
            }
            let len = usize::from(get_u16(b, field::LENGTH));
            if len < HEADER_LEN || len > b.len() {
                return Err(WireError::BadLength);
            }
            Ok(Packet { buffer })
        }

        /// Give the buffer back.
        #[inline]
        pub fn into_inner(self) -> T {
            self.buffer
        }

        /// Source port.
        #[inline]
        pub fn src_port(&self) -> u16 {
            get_u16(self.buffer.as_ref(), field::SRC_PORT)
        }

        /// Destination port.
        #[inline]
        pub fn dst_port(&self) -> u16 {
            get_u16(self.buffer.as_ref(), field::DST_PORT)
        }

        /// Length field (header + payload).
        #[inline]
        pub fn len(&self) -> u16 {
            get_u16(self.buffer.as_ref(), field::LENGTH)
        }

        /// True if the length field says there is no payload.
        #[inline]
        pub fn is_empty(&self) -> bool {
            usize::from(self.len()) <= HEADER_LEN
        }

        /// Checksum field (0 = none, IPv4 only).
        #[inline]
        pub fn checksum(&self) -> u16 {
            get_u16(self.buffer.as_ref(), field::CHECKSUM)
        }

        /// Payload (`8..length`, clamped to the buffer).
        #[inline]
        pub fn payload(&self) -> &[u8] {
            let b = self.buffer.as_ref();
            let end = usize::from(self.len()).clamp(HEADER_LEN, b.len());
            &b[HEADER_LEN..end]
        }

        /// The datagram proper (`0..length`, clamped).
        #[inline]
        fn datagram(&self) -> &[u8] {
            let b = self.buffer.as_ref();
            &b[..usize::from(self.len()).clamp(HEADER_LEN, b.len())]
        }

        /// Verify the checksum over an IPv4 pseudo-header (a zero checksum
        /// means "not computed" and verifies).
        pub fn verify_checksum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
            if self.checksum() == 0 {
                return true;
            }
            let d = self.datagram();
            let s = checksum::add(
                checksum::pseudo_v4(src, dst, PROTO_UDP, d.len() as u16),
                checksum::sum(d),
            );
            checksum::fold(s) == 0xffff
        }
    }

    impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
        /// Set the source port.
        #[inline]
        pub fn set_src_port(&mut self, v: u16) {
            put_u16(self.buffer.as_mut(), field::SRC_PORT, v);
        }

        /// Set the destination port.
        #[inline]
        pub fn set_dst_port(&mut self, v: u16) {
            put_u16(self.buffer.as_mut(), field::DST_PORT, v);
        }

        /// Set the checksum field.
        #[inline]
        pub fn set_checksum(&mut self, v: u16) {
            put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
        }
    }
}

/// Minimal TCP view (RFC 9293).
pub mod tcp {
    use super::*;

    /// Minimum TCP header length.
    pub const MIN_HEADER_LEN: usize = 20;
    /// Flag: FIN.
    pub const FLAG_FIN: u8 = 0x01;
    /// Flag: SYN.
    pub const FLAG_SYN: u8 = 0x02;
    /// Flag: RST.
    pub const FLAG_RST: u8 = 0x04;
    /// Flag: PSH.
    pub const FLAG_PSH: u8 = 0x08;
    /// Flag: ACK.
    pub const FLAG_ACK: u8 = 0x10;

    mod field {
        pub const SRC_PORT: usize = 0;
        pub const DST_PORT: usize = 2;
        pub const SEQ: usize = 4;
        pub const ACK: usize = 8;
        pub const DATA_OFF: usize = 12;
        pub const FLAGS: usize = 13;
        pub const WINDOW: usize = 14;
        pub const CHECKSUM: usize = 16;
    }

    /// A view over a TCP segment.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Packet<T: AsRef<[u8]>> {
        buffer: T,
    }

    impl<T: AsRef<[u8]>> Packet<T> {
        /// Wrap without validation.
        #[inline]
        pub const fn new_unchecked(buffer: T) -> Self {
            Packet { buffer }
        }

        /// Wrap after checking `len >= 20` (`Truncated`), data offset >= 5
        /// (`BadHeaderLen`) and data offset * 4 <= len (`Truncated`).
        pub fn new_checked(buffer: T) -> Result<Self, WireError> {
            let b = buffer.as_ref();
            if b.len() < MIN_HEADER_LEN {
                return Err(WireError::Truncated);
            }
            let hl = usize::from(b[field::DATA_OFF] >> 4) * 4;
            if hl < MIN_HEADER_LEN {
                return Err(WireError::BadHeaderLen);
            }
            if hl > b.len() {
                return Err(WireError::Truncated);
            }
            Ok(Packet { buffer })
        }

        /// Give the buffer back.
        #[inline]
        pub fn into_inner(self) -> T {
            self.buffer
        }

        /// Source port.
        #[inline]
        pub fn src_port(&self) -> u16 {
            get_u16(self.buffer.as_ref(), field::SRC_PORT)
        }

        /// Destination port.
        #[inline]
        pub fn dst_port(&self) -> u16 {
            get_u16(self.buffer.as_ref(), field::DST_PORT)
        }

        /// Sequence number.
        #[inline]
        pub fn seq(&self) -> u32 {
            get_u32(self.buffer.as_ref(), field::SEQ)
        }

        /// Acknowledgment number.
        #[inline]
        pub fn ack(&self) -> u32 {
            get_u32(self.buffer.as_ref(), field::ACK)
        }

        /// Header length in bytes (data offset * 4).
        #[inline]
        pub fn header_len(&self) -> usize {
            usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
        }

        /// Flags byte (CWR ECE URG ACK PSH RST SYN FIN).
        #[inline]
        pub fn flags(&self) -> u8 {
            self.buffer.as_ref()[field::FLAGS]
        }

        /// Window.
        #[inline]
        pub fn window(&self) -> u16 {
            get_u16(self.buffer.as_ref(), field::WINDOW)
        }

        /// Checksum field.
        #[inline]
        pub fn checksum(&self) -> u16 {
            get_u16(self.buffer.as_ref(), field::CHECKSUM)
        }

        /// Options (`20..header_len`, clamped).
        #[inline]
        pub fn options(&self) -> &[u8] {
            let b = self.buffer.as_ref();
            &b[MIN_HEADER_LEN..self.header_len().clamp(MIN_HEADER_LEN, b.len())]
        }

        /// Payload (`header_len..`, clamped).
        #[inline]
        pub fn payload(&self) -> &[u8] {
            let b = self.buffer.as_ref();
            &b[self.header_len().clamp(MIN_HEADER_LEN, b.len())..]
        }

        /// Verify the checksum over an IPv4 pseudo-header; the view must
        /// cover exactly the segment (e.g. `ipv4::Packet::payload()`).
        pub fn verify_checksum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
            let b = self.buffer.as_ref();
            let s = checksum::add(
                checksum::pseudo_v4(src, dst, PROTO_TCP, b.len() as u16),
                checksum::sum(b),
            );
            checksum::fold(s) == 0xffff
        }
    }

    impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
        /// Set the source port.
        #[inline]
        pub fn set_src_port(&mut self, v: u16) {
            put_u16(self.buffer.as_mut(), field::SRC_PORT, v);
        }

        /// Set the destination port.
        #[inline]
        pub fn set_dst_port(&mut self, v: u16) {
            put_u16(self.buffer.as_mut(), field::DST_PORT, v);
        }

        /// Set the checksum field.
        #[inline]
        pub fn set_checksum(&mut self, v: u16) {
            put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4;
    use crate::wire::ipv4::tests::{ICMP_ECHO_FRAME, TCP_SYN_FRAME};
    use proptest::prelude::*;

    fn syn() -> ipv4::Packet<&'static [u8]> {
        ipv4::Packet::new_checked(&TCP_SYN_FRAME[14..]).unwrap()
    }

    #[test]
    fn ports_of_real_packets() {
        let ip = syn();
        assert_eq!(ports(ip.protocol(), ip.payload()), Some((51234, 443)));
        let icmp = ipv4::Packet::new_checked(&ICMP_ECHO_FRAME[14..]).unwrap();
        assert_eq!(ports(icmp.protocol(), icmp.payload()), None);
        assert_eq!(ports(PROTO_UDP, &[0, 53, 0xc3, 0x50]), Some((53, 50000)));
        assert_eq!(
            ports(PROTO_SCTP, &[0x0b, 0x59, 0x0b, 0x59, 0, 0]),
            Some((2905, 2905))
        );
        assert_eq!(ports(PROTO_UDP, &[0, 53, 0xc3]), None);
    }

    #[test]
    fn tcp_syn_view() {
        let ip = syn();
        let t = tcp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (51234, 443));
        assert_eq!(t.seq(), 0x3b9a_ca07);
        assert_eq!(t.ack(), 0);
        assert_eq!(t.flags(), tcp::FLAG_SYN);
        assert_eq!(t.window(), 64240);
        assert_eq!(t.header_len(), 40);
        assert_eq!(&t.options()[..4], &[0x02, 0x04, 0x05, 0xb4]);
        assert!(t.payload().is_empty());
        assert!(t.verify_checksum_v4(ip.src(), ip.dst()));
        assert!(!t.verify_checksum_v4(ip.dst(), [1, 1, 1, 1]));
        for n in 0..=ip.payload().len() {
            if let Ok(t) = tcp::Packet::new_checked(&ip.payload()[..n]) {
                assert_eq!(n, 40);
                let _ = (
                    t.options(),
                    t.payload(),
                    t.verify_checksum_v4([0; 4], [0; 4]),
                );
            }
        }
    }

    #[test]
    fn udp_view() {
        // DNS query 10.0.0.2:50000 -> 10.0.0.1:53 (header + 4 payload bytes),
        // checksum computed below then verified.
        let mut d = [
            0xc3, 0x50, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 0xab, 0xcd, 0x01, 0x00,
        ];
        let c = checksum::finish(checksum::add(
            checksum::pseudo_v4([10, 0, 0, 2], [10, 0, 0, 1], PROTO_UDP, 12),
            checksum::sum(&d),
        ));
        let mut u = udp::Packet::new_checked(&mut d[..]).unwrap();
        u.set_checksum(c);
        assert!(u.verify_checksum_v4([10, 0, 0, 2], [10, 0, 0, 1]));
        assert!(!u.verify_checksum_v4([10, 0, 0, 3], [10, 0, 0, 1]));
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (50000, 53, 12));
        assert_eq!(u.payload(), &[0xab, 0xcd, 0x01, 0x00]);
        assert!(!u.is_empty());
        u.set_src_port(1);
        u.set_dst_port(2);
        assert_eq!(ports(PROTO_UDP, &d), Some((1, 2)));
        let mut bad = d;
        bad[5] = 13;
        assert_eq!(
            udp::Packet::new_checked(&bad[..]),
            Err(WireError::BadLength)
        );
        bad[5] = 7;
        assert_eq!(
            udp::Packet::new_checked(&bad[..]),
            Err(WireError::BadLength)
        );
        assert_eq!(udp::Packet::new_checked(&d[..7]), Err(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), proto in any::<u8>()) {
            let _ = ports(proto, &data);
            if let Ok(u) = udp::Packet::new_checked(&data[..]) {
                let _ = (u.src_port(), u.dst_port(), u.len(), u.is_empty(), u.checksum(), u.payload(), u.verify_checksum_v4([1; 4], [2; 4]));
            }
            if let Ok(t) = tcp::Packet::new_checked(&data[..]) {
                let _ = (t.src_port(), t.dst_port(), t.seq(), t.ack(), t.header_len(), t.flags(), t.window(), t.checksum(), t.options(), t.payload(), t.verify_checksum_v4([1; 4], [2; 4]));
            }
        }
    }
}
