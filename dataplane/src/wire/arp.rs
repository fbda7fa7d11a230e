//! ARP (RFC 826), Ethernet/IPv4 only.
//!
//! [`Packet::new_checked`] rejects anything but htype 1 / ptype 0x0800 /
//! hlen 6 / plen 4 with [`WireError::Unsupported`], so the accessors can use
//! fixed offsets. [`Packet::make_reply`] turns a request into its reply in
//! place; [`emit`] writes a fresh 28-byte packet.

use super::ethernet::{MacAddr, ETHERTYPE_IPV4};
use super::{get_array, get_u16, put_u16, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;
/// Hardware type: Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

mod field {
    use core::ops::Range;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view over an Ethernet/IPv4 ARP packet.
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

    /// Wrap after checking length (`Truncated`) and the hardware/protocol
    /// types and lengths (`Unsupported`).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if get_u16(b, field::HTYPE) != HTYPE_ETHERNET
            || get_u16(b, field::PTYPE) != ETHERTYPE_IPV4
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(WireError::Unsupported);
        }
        Ok(Packet { buffer })
    }

    /// Give the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type (1 after `new_checked`).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (0x0800 after `new_checked`).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Operation ([`OP_REQUEST`], [`OP_REPLY`], or anything else).
    #[inline]
    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        get_array(self.buffer.as_ref(), field::SHA.start)
    }

    /// Sender protocol address.
    #[inline]
    pub fn sender_ip(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::SPA.start)
    }

    /// Target hardware address.
    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        get_array(self.buffer.as_ref(), field::THA.start)
    }

    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::TPA.start)
    }

    /// Gratuitous ARP: sender IP equals target IP.
    #[inline]
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip() == self.target_ip()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the operation.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        put_u16(self.buffer.as_mut(), field::OPER, op);
    }

    /// Set the sender hardware address.
    #[inline]
    pub fn set_sender_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac);
    }

    /// Set the sender protocol address.
    #[inline]
    pub fn set_sender_ip(&mut self, ip: [u8; 4]) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&ip);
    }

    /// Set the target hardware address.
    #[inline]
    pub fn set_target_mac(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac);
    }

    /// Set the target protocol address.
    #[inline]
    pub fn set_target_ip(&mut self, ip: [u8; 4]) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&ip);
    }

    /// Write the fixed Ethernet/IPv4 hardware/protocol type and length fields.
    #[inline]
    pub fn set_fixed_fields(&mut self) {
        let b = self.buffer.as_mut();
        put_u16(b, field::HTYPE, HTYPE_ETHERNET);
        put_u16(b, field::PTYPE, ETHERTYPE_IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Turn a request into its reply in place: target := old sender,
    /// sender := (`my_mac`, old target IP), operation := reply.
    /// The caller decides whether the request was for one of its addresses.
    pub fn make_reply(&mut self, my_mac: MacAddr) {
        let (sha, spa, tpa) = (self.sender_mac(), self.sender_ip(), self.target_ip());
        self.set_target_mac(sha);
        self.set_target_ip(spa);
        self.set_sender_mac(my_mac);
        self.set_sender_ip(tpa);
        self.set_operation(OP_REPLY);
    }
}

/// Write a 28-byte Ethernet/IPv4 ARP packet at the start of `buf`.
/// Returns [`PACKET_LEN`], or `Truncated` if `buf` is shorter.
pub fn emit(
    buf: &mut [u8],
    op: u16,
    sender_mac: MacAddr,
    sender_ip: [u8; 4],
    target_mac: MacAddr,
    target_ip: [u8; 4],
) -> Result<usize, WireError> {
    if buf.len() < PACKET_LEN {
        return Err(WireError::Truncated);
    }
    let mut p = Packet::new_unchecked(&mut buf[..PACKET_LEN]);
    p.set_fixed_fields();
    p.set_operation(op);
    p.set_sender_mac(sender_mac);
    p.set_sender_ip(sender_ip);
    p.set_target_mac(target_mac);
    p.set_target_ip(target_ip);
    Ok(PACKET_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ARP body of a captured request: who-has 24.166.173.159 tell
    /// 24.166.172.1 (from 00:07:0d:af:f4:54), followed by Ethernet padding.
    const REQUEST: [u8; 46] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54, 0x18,
        0xa6, 0xac, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0xa6, 0xad, 0x9f, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ];

    fn exercise<T: AsRef<[u8]>>(p: &Packet<T>) {
        let _ = (
            p.hardware_type(),
            p.protocol_type(),
            p.operation(),
            p.sender_mac(),
            p.sender_ip(),
            p.target_mac(),
            p.target_ip(),
            p.is_gratuitous(),
        );
    }

    #[test]
    fn parse_request() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_mac(), [0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54]);
        assert_eq!(p.sender_ip(), [24, 166, 172, 1]);
        assert_eq!(p.target_mac(), [0; 6]);
        assert_eq!(p.target_ip(), [24, 166, 173, 159]);
        assert!(!p.is_gratuitous());
        exercise(&p);
    }

    #[test]
    fn reply_in_place() {
        let me = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let mut buf = REQUEST;
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.make_reply(me);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), OP_REPLY);
        assert_eq!(p.sender_mac(), me);
        assert_eq!(p.sender_ip(), [24, 166, 173, 159]);
        assert_eq!(p.target_mac(), [0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54]);
        assert_eq!(p.target_ip(), [24, 166, 172, 1]);

        // Same bytes as emitting the reply from scratch.
        let mut out = [0u8; 28];
        let n = emit(
            &mut out,
            OP_REPLY,
            me,
            [24, 166, 173, 159],
            [0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54],
            [24, 166, 172, 1],
        )
        .unwrap();
        assert_eq!(n, PACKET_LEN);
        assert_eq!(&out[..], &buf[..28]);
    }

    #[test]
    fn emit_request_roundtrip() {
        let mut out = [0xaau8; 40];
        let n = emit(
            &mut out,
            OP_REQUEST,
            [2; 6],
            [10, 0, 0, 1],
            [0; 6],
            [10, 0, 0, 2],
        )
        .unwrap();
        assert_eq!(&out[..8], &REQUEST[..8]);
        assert_eq!(out[28], 0xaa, "must not write past 28 bytes");
        let p = Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(p.target_ip(), [10, 0, 0, 2]);
        assert_eq!(
            emit(&mut out[..27], 1, [0; 6], [0; 4], [0; 6], [0; 4]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn rejects_other_types() {
        for (i, v) in [(1usize, 0x06u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = REQUEST;
            b[i] = v;
            assert_eq!(
                Packet::new_checked(&b[..]),
                Err(WireError::Unsupported),
                "byte {i}"
            );
        }
    }

    #[test]
    fn every_prefix() {
        for n in 0..=REQUEST.len() {
            match Packet::new_checked(&REQUEST[..n]) {
                Ok(p) => {
                    assert!(n >= PACKET_LEN);
                    exercise(&p);
                }
                Err(e) => {
                    assert!(n < PACKET_LEN);
                    assert_eq!(e, WireError::Truncated);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..64), fix in any::<bool>()) {
            if fix && data.len() >= 6 {
                data[..6].copy_from_slice(&REQUEST[..6]);
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                exercise(&p);
                let mut copy = data.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                p.make_reply([1; 6]);
                prop_assert!(Packet::new_checked(&copy[..]).is_ok());
            }
        }
    }
}
