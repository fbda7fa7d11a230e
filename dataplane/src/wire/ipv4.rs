//! IPv4 header (RFC 791).
//!
//! [`Packet::new_checked`] validates version, IHL and total length against
//! the buffer; the buffer may be longer than `total_len()` (Ethernet
//! padding), and [`Packet::payload`] stops at `total_len()`. Options are
//! exposed raw via [`Packet::options`]. [`Packet::decrement_ttl`] updates the
//! checksum incrementally (RFC 1624).

use super::checksum;
use super::{get_array, get_u16, get_u32, put_u16, WireError};

/// Minimum (option-less) header length.
pub const MIN_HEADER_LEN: usize = 20;
/// Maximum header length (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Protocol number: ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Protocol number: TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number: UDP.
pub const PROTO_UDP: u8 = 17;
/// Protocol number: ICMPv6 (seen inside IPv6, listed for completeness).
pub const PROTO_ICMPV6: u8 = 58;
/// Protocol number: SCTP.
pub const PROTO_SCTP: u8 = 132;
/// Flags/fragment word: reserved ("evil") bit.
pub const FLAG_RESERVED: u16 = 0x8000;
/// Flags/fragment word: don't fragment.
pub const FLAG_DF: u16 = 0x4000;
/// Flags/fragment word: more fragments.
pub const FLAG_MF: u16 = 0x2000;
/// Flags/fragment word: fragment offset mask (in 8-byte units).
pub const FRAG_OFFSET_MASK: u16 = 0x1fff;
/// Default TTL for locally generated packets.
pub const DEFAULT_TTL: u8 = 64;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// A view over an IPv4 packet.
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

    /// Wrap after validating:
    /// * `len >= 20`, else `Truncated`;
    /// * version 4, else `BadVersion`;
    /// * IHL >= 5, else `BadHeaderLen`; IHL*4 <= len, else `Truncated`;
    /// * IHL*4 <= total length <= len, else `BadLength`.
    ///
    /// The checksum is not verified (see [`Packet::verify_checksum`]).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if hl > b.len() {
            return Err(WireError::Truncated);
        }
        let total = usize::from(get_u16(b, field::LENGTH));
        if total < hl || total > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buffer })
    }

    /// Give the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble (4 after `new_checked`).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The whole DSCP/ECN byte (former TOS).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// DSCP (upper 6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.dscp_ecn() >> 2
    }

    /// ECN (lower 2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.dscp_ecn() & 0x03
    }

    /// Total length field (header + payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Raw flags + fragment offset word.
    #[inline]
    pub fn flags_frag(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLG_OFF)
    }

    /// DF flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & FLAG_DF != 0
    }

    /// MF flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_frag() & FRAG_OFFSET_MASK) << 3
    }

    /// True if this is any fragment (MF set or non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol number of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline]
    pub fn header_checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::DST.start)
    }

    /// Source address as a host-order integer.
    #[inline]
    pub fn src_u32(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address as a host-order integer.
    #[inline]
    pub fn dst_u32(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::DST.start)
    }

    /// End of the header, clamped to the buffer.
    #[inline]
    fn header_end(&self) -> usize {
        self.header_len().min(self.buffer.as_ref().len())
    }

    /// End of the packet (`total_len`), clamped to `[header_end, buffer len]`.
    #[inline]
    fn packet_end(&self) -> usize {
        usize::from(self.total_len())
            .min(self.buffer.as_ref().len())
            .max(self.header_end())
    }

    /// The header bytes (including options).
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_end()]
    }

    /// Options bytes (between byte 20 and the header length); may be empty.
    #[inline]
    pub fn options(&self) -> &[u8] {
        let end = self.header_end().max(MIN_HEADER_LEN);
        &self.buffer.as_ref()[MIN_HEADER_LEN..end]
    }

    /// Payload: `header_len..total_len` (Ethernet padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_end()..self.packet_end()]
    }

    /// The IP packet proper: `0..total_len` (Ethernet padding excluded).
    #[inline]
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.packet_end()]
    }

    /// True if the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 4 and the header length (bytes, multiple of 4, 20..=60).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        debug_assert!(
            header_len & 3 == 0 && (MIN_HEADER_LEN..=MAX_HEADER_LEN).contains(&header_len)
        );
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) as u8 & 0x0f);
    }

    /// Set the DSCP/ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Set the total length.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Set the identification.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        put_u16(self.buffer.as_mut(), field::IDENT, ident);
    }

    /// Set DF, MF and the fragment offset (in bytes; the low 3 bits are
    /// dropped, so it should be a multiple of 8).
    #[inline]
    pub fn set_flags_frag(&mut self, dont_frag: bool, more_frags: bool, frag_offset: u16) {
        let mut v = (frag_offset >> 3) & FRAG_OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        put_u16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Set the TTL (checksum not updated).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Set the protocol.
    #[inline]
    pub fn set_protocol(&mut self, proto: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = proto;
    }

    /// Set the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, csum);
    }

    /// Set the source address (checksum not updated).
    #[inline]
    pub fn set_src(&mut self, ip: [u8; 4]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&ip);
    }

    /// Set the destination address (checksum not updated).
    #[inline]
    pub fn set_dst(&mut self, ip: [u8; 4]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&ip);
    }

    /// Recompute and store the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Decrement the TTL and update the checksum incrementally; returns the
    /// new TTL. Precondition: `ttl() >= 1` (the forwarding path drops TTL
    /// <= 1 first). With TTL 0 nothing is changed and 0 is returned.
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        debug_assert!(ttl >= 1, "decrement_ttl on TTL 0");
        if ttl == 0 {
            return 0;
        }
        let proto = self.protocol();
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl - 1, proto]);
        let c = checksum::update16(self.header_checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(c);
        ttl - 1
    }

    /// Mutable payload (`header_len..total_len`).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_end(), self.packet_end());
        &mut self.buffer.as_mut()[start..end]
    }
}

/// Write a 20-byte header (no options, DSCP 0, DF clear, checksum filled)
/// at the start of `buf` for a payload of `payload_len` bytes. Returns 20.
/// Errors: `Truncated` if `buf` is shorter than 20, `BadLength` if
/// `20 + payload_len` does not fit the 16-bit total length.
pub fn emit_header(
    buf: &mut [u8],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    ttl: u8,
    payload_len: u16,
    ident: u16,
) -> Result<usize, WireError> {
    if buf.len() < MIN_HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let total = payload_len
        .checked_add(MIN_HEADER_LEN as u16)
        .ok_or(WireError::BadLength)?;
    let mut p = Packet::new_unchecked(&mut buf[..MIN_HEADER_LEN]);
    p.set_version_and_header_len(MIN_HEADER_LEN);
    p.set_dscp_ecn(0);
    p.set_total_len(total);
    p.set_ident(ident);
    p.set_flags_frag(false, false, 0);
    p.set_ttl(ttl);
    p.set_protocol(proto);
    p.set_src(src);
    p.set_dst(dst);
    p.fill_checksum();
    Ok(MIN_HEADER_LEN)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ethernet frame: ICMP echo request 192.168.1.10 -> 8.8.8.8 (Linux ping,
    /// 56 data bytes).
    pub(crate) const ICMP_ECHO_FRAME: [u8; 98] = [
        0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x80, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x54, 0x5a, 0x3e, 0x40, 0x00, 0x40, 0x01, 0x0e, 0xa9, 0xc0, 0xa8, 0x01, 0x0a,
        0x08, 0x08, 0x08, 0x08, 0x08, 0x00, 0x22, 0x89, 0x1c, 0x2b, 0x00, 0x01, 0xc8, 0xd5, 0xf4,
        0x65, 0x00, 0x00, 0x00, 0x00, 0x2f, 0x3c, 0x0e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x11,
        0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20,
        0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
        0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37,
    ];

    /// Ethernet frame: TCP SYN 10.0.0.2:51234 -> 93.184.216.34:443 with
    /// MSS/SACK-perm/timestamps/window-scale options.
    pub(crate) const TCP_SYN_FRAME: [u8; 74] = [
        0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x80, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x3c, 0xd4, 0x31, 0x40, 0x00, 0x40, 0x06, 0x26, 0xae, 0x0a, 0x00, 0x00, 0x02,
        0x5d, 0xb8, 0xd8, 0x22, 0xc8, 0x22, 0x01, 0xbb, 0x3b, 0x9a, 0xca, 0x07, 0x00, 0x00, 0x00,
        0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x07, 0x5b, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02,
        0x08, 0x0a, 0x0a, 0x1b, 0x2c, 0x3d, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    /// IPv4 header with a Router Alert option (IHL 6), IGMPv2 report for
    /// 224.0.0.251, as sent by Linux.
    const IGMP_WITH_OPTIONS: [u8; 32] = [
        0x46, 0xc0, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, 0x41, 0x6a, 0xc0, 0xa8, 0x01,
        0x0a, 0xe0, 0x00, 0x00, 0xfb, 0x94, 0x04, 0x00, 0x00, 0x16, 0x00, 0x09, 0x04, 0xe0, 0x00,
        0x00, 0xfb,
    ];

    pub(crate) fn exercise<T: AsRef<[u8]>>(p: &Packet<T>) {
        let _ = (
            p.version(),
            p.header_len(),
            p.dscp_ecn(),
            p.dscp(),
            p.ecn(),
            p.total_len(),
            p.ident(),
            p.flags_frag(),
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
            p.ttl(),
            p.protocol(),
            p.header_checksum(),
            p.src(),
            p.dst(),
            p.src_u32(),
            p.dst_u32(),
            p.verify_checksum(),
        );
        let _ = (
            p.header().len(),
            p.options().len(),
            p.payload().len(),
            p.packet().len(),
        );
    }

    #[test]
    fn icmp_echo() {
        let p = Packet::new_checked(&ICMP_ECHO_FRAME[14..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 84);
        assert_eq!(p.ident(), 0x5a3e);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.src(), [192, 168, 1, 10]);
        assert_eq!(p.dst(), [8, 8, 8, 8]);
        assert_eq!(p.src_u32(), 0xc0a8_010a);
        assert_eq!(p.dst_u32(), 0x0808_0808);
        assert!(p.verify_checksum());
        assert_eq!(p.header_checksum(), 0x0ea9);
        assert_eq!(p.payload().len(), 64);
        assert!(p.options().is_empty());
        exercise(&p);
    }

    #[test]
    fn tcp_syn() {
        let p = Packet::new_checked(&TCP_SYN_FRAME[14..]).unwrap();
        assert_eq!(p.protocol(), PROTO_TCP);
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 40);
        assert_eq!(p.src(), [10, 0, 0, 2]);
        assert_eq!(p.dst(), [93, 184, 216, 34]);
    }

    #[test]
    fn options_and_padding() {
        // Pad to a 46-byte Ethernet minimum payload.
        let mut buf = [0u8; 46];
        buf[..32].copy_from_slice(&IGMP_WITH_OPTIONS);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert!(p.verify_checksum());
        assert_eq!(p.dscp(), 48);
        assert_eq!(p.ttl(), 1);
        assert_eq!(p.payload(), &IGMP_WITH_OPTIONS[24..]);
        assert_eq!(p.packet().len(), 32);
    }

    #[test]
    fn errors() {
        let ip = &ICMP_ECHO_FRAME[14..];
        let mut b = ip.to_vec();
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadVersion));
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadHeaderLen));
        b[0] = 0x4f; // 60-byte header in a 84-byte buffer, total 84: fine
        assert!(Packet::new_checked(&b[..]).is_ok());
        assert_eq!(Packet::new_checked(&b[..40]), Err(WireError::Truncated));
        b[0] = 0x45;
        b[2..4].copy_from_slice(&85u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadLength));
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadLength));
        b[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert!(Packet::new_checked(&b[..]).unwrap().payload().is_empty());
        let mut b = ip.to_vec();
        b[15] ^= 1;
        assert!(!Packet::new_checked(&b[..]).unwrap().verify_checksum());
    }

    #[test]
    fn every_prefix() {
        for frame in [&ICMP_ECHO_FRAME[..], &TCP_SYN_FRAME[..]] {
            let ip = &frame[14..];
            for n in 0..=ip.len() {
                match Packet::new_checked(&ip[..n]) {
                    Ok(p) => {
                        assert_eq!(n, ip.len());
                        exercise(&p);
                    }
                    Err(e) => assert!(matches!(e, WireError::Truncated | WireError::BadLength)),
                }
            }
        }
    }

    #[test]
    fn setters_and_ttl() {
        let mut b = ICMP_ECHO_FRAME[14..].to_vec();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl(), 63);
        assert!(p.verify_checksum());
        let inc = p.header_checksum();
        p.fill_checksum();
        assert_eq!(p.header_checksum(), inc);
        p.set_ttl(1);
        p.fill_checksum();
        assert_eq!(p.decrement_ttl(), 0);
        assert!(p.verify_checksum());

        p.set_src([1, 2, 3, 4]);
        p.set_dst([5, 6, 7, 8]);
        p.set_ident(7);
        p.set_flags_frag(false, true, 1480);
        p.set_protocol(PROTO_UDP);
        p.set_dscp_ecn(0xb8);
        p.payload_mut()[0] = 0xee;
        p.fill_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.src(), p.dst(), p.ident()),
            ([1, 2, 3, 4], [5, 6, 7, 8], 7)
        );
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!(p.protocol(), PROTO_UDP);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.payload()[0], 0xee);
        assert!(p.verify_checksum());

        // A setter that breaks the total length cannot make accessors panic.
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(0xffff);
        exercise(&p);
        assert_eq!(p.payload_mut().len(), 64);
        p.set_total_len(3);
        exercise(&p);
        assert_eq!(p.payload().len(), 0);
    }

    #[test]
    fn emit() {
        let mut buf = [0u8; 64];
        assert_eq!(
            emit_header(
                &mut buf,
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                PROTO_UDP,
                64,
                8,
                0x1234
            ),
            Ok(20)
        );
        let p = Packet::new_checked(&buf[..28]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.total_len(), 28);
        assert!(!p.dont_frag());
        assert_eq!((p.ttl(), p.ident(), p.protocol()), (64, 0x1234, PROTO_UDP));
        assert_eq!(
            emit_header(&mut buf[..19], [0; 4], [0; 4], 0, 0, 0, 0),
            Err(WireError::Truncated)
        );
        assert_eq!(
            emit_header(&mut buf, [0; 4], [0; 4], 0, 0, 65516, 0),
            Err(WireError::BadLength)
        );
        assert_eq!(
            emit_header(&mut buf, [0; 4], [0; 4], 0, 0, 65515, 0),
            Ok(20)
        );
        // Same header as the real capture once the same fields are set.
        let mut buf = [0u8; 20];
        emit_header(
            &mut buf,
            [192, 168, 1, 10],
            [8, 8, 8, 8],
            PROTO_ICMP,
            64,
            64,
            0x5a3e,
        )
        .unwrap();
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_flags_frag(true, false, 0);
        p.fill_checksum();
        assert_eq!(&buf[..], &ICMP_ECHO_FRAME[14..34]);
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..100), fix in any::<bool>()) {
            if fix && data.len() >= 4 {
                // Steer towards plausible headers so the Ok path is exercised.
                data[0] = 0x40 | (data[0] & 0x0f);
                let len = data.len() as u16;
                let total = len - (u16::from(data[3]) % 4).min(len);
                data[2..4].copy_from_slice(&total.to_be_bytes());
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                exercise(&p);
                prop_assert!(p.header_len() + p.payload().len() == usize::from(p.total_len()));
                let mut copy = data.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                if p.ttl() > 0 {
                    let was_ok = p.verify_checksum();
                    p.decrement_ttl();
                    prop_assert_eq!(p.verify_checksum(), was_ok);
                }
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
                let _ = p.payload_mut().len();
            }
        }

        #[test]
        fn decrement_ttl_matches_recompute(ttl in 1u8.., ident in any::<u16>(), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), proto in any::<u8>()) {
            let mut buf = [0u8; 20];
            emit_header(&mut buf, src, dst, proto, ttl, 0, ident).unwrap();
            let mut p = Packet::new_checked(&mut buf[..]).unwrap();
            prop_assert_eq!(p.decrement_ttl(), ttl - 1);
            let inc = p.header_checksum();
            p.fill_checksum();
            prop_assert_eq!(inc, p.header_checksum());
        }
    }
}
