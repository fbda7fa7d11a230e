//! IPv6 fixed header (RFC 8200) and extension-header walking.
//!
//! [`Packet::new_checked`] validates the version and that `40 + payload_len`
//! fits the buffer (which may be longer: Ethernet padding). Jumbograms
//! (payload length 0 + Jumbo option) are not supported: payload length 0
//! means an empty payload. [`Packet::upper_layer`] skips hop-by-hop,
//! routing, destination-options and fragment headers to find the transport.

use super::{get_array, get_u16, get_u32, put_u16, put_u32, WireError};

/// Fixed header length.
pub const HEADER_LEN: usize = 40;
/// Next header: hop-by-hop options.
pub const NEXT_HEADER_HOPBYHOP: u8 = 0;
/// Next header: TCP.
pub const NEXT_HEADER_TCP: u8 = 6;
/// Next header: UDP.
pub const NEXT_HEADER_UDP: u8 = 17;
/// Next header: routing header.
pub const NEXT_HEADER_ROUTING: u8 = 43;
/// Next header: fragment header.
pub const NEXT_HEADER_FRAGMENT: u8 = 44;
/// Next header: ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// Next header: no next header.
pub const NEXT_HEADER_NONE: u8 = 59;
/// Next header: destination options.
pub const NEXT_HEADER_DSTOPTS: u8 = 60;
/// Next header: SCTP.
pub const NEXT_HEADER_SCTP: u8 = 132;
/// Most extension headers [`Packet::upper_layer`] will skip.
pub const MAX_EXT_HEADERS: usize = 8;
/// Fragment header length.
pub const FRAGMENT_HEADER_LEN: usize = 8;
/// IPv6 minimum link MTU (RFC 8200 §5).
pub const MIN_MTU: usize = 1280;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    pub const PAYLOAD: usize = 40;
}

/// A view over an IPv6 packet.
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

    /// Wrap after validating: `len >= 40` (`Truncated`), version 6
    /// (`BadVersion`), `40 + payload_len <= len` (`BadLength`).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(WireError::BadVersion);
        }
        if HEADER_LEN + usize::from(get_u16(b, field::LENGTH)) > b.len() {
            return Err(WireError::BadLength);
        }
        Ok(Packet { buffer })
    }

    /// Give the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble (6 after `new_checked`).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class (DSCP << 2 | ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (get_u32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length field.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src(&self) -> [u8; 16] {
        get_array(self.buffer.as_ref(), field::SRC.start)
    }

    /// Destination address.
    #[inline]
    pub fn dst(&self) -> [u8; 16] {
        get_array(self.buffer.as_ref(), field::DST.start)
    }

    /// Source address as an integer.
    #[inline]
    pub fn src_u128(&self) -> u128 {
        u128::from_be_bytes(self.src())
    }

    /// Destination address as an integer.
    #[inline]
    pub fn dst_u128(&self) -> u128 {
        u128::from_be_bytes(self.dst())
    }

    /// End of the payload, clamped to the buffer.
    #[inline]
    fn payload_end(&self) -> usize {
        (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len())
    }

    /// The fixed header bytes.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    /// Payload (`40..40 + payload_len`; Ethernet padding excluded),
    /// including any extension headers.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..self.payload_end()]
    }

    /// The IP packet proper (`0..40 + payload_len`).
    #[inline]
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.payload_end()]
    }

    /// Find the upper-layer protocol by skipping up to [`MAX_EXT_HEADERS`]
    /// hop-by-hop / routing / destination-options / fragment headers.
    /// Returns `(protocol, offset into payload())`.
    ///
    /// For a fragment header with a non-zero offset (a non-first fragment)
    /// there is no transport header to find: the walk stops there and
    /// returns `(NEXT_HEADER_FRAGMENT, offset of the fragment header)`, so
    /// callers never mistake fragment data for ports. Any other next-header
    /// value (including ESP, AH and "no next header") is returned as is.
    ///
    /// Errors: `Truncated` if an extension header runs past the payload,
    /// `Malformed` if there are more than [`MAX_EXT_HEADERS`].
    pub fn upper_layer(&self) -> Result<(u8, usize), WireError> {
        let payload = self.payload();
        let mut nh = self.next_header();
        let mut off = 0usize;
        for _ in 0..MAX_EXT_HEADERS {
            let len = match nh {
                NEXT_HEADER_HOPBYHOP | NEXT_HEADER_ROUTING | NEXT_HEADER_DSTOPTS => {
                    let hdr = payload.get(off..off + 2).ok_or(WireError::Truncated)?;
                    (usize::from(hdr[1]) + 1) * 8
                }
                NEXT_HEADER_FRAGMENT => {
                    let hdr = payload
                        .get(off..off + FRAGMENT_HEADER_LEN)
                        .ok_or(WireError::Truncated)?;
                    if get_u16(hdr, 2) & 0xfff8 != 0 {
                        return Ok((NEXT_HEADER_FRAGMENT, off));
                    }
                    FRAGMENT_HEADER_LEN
                }
                _ => return Ok((nh, off)),
            };
            if off + len > payload.len() {
                return Err(WireError::Truncated);
            }
            nh = payload[off];
            off += len;
        }
        match nh {
            NEXT_HEADER_HOPBYHOP | NEXT_HEADER_ROUTING | NEXT_HEADER_DSTOPTS
            | NEXT_HEADER_FRAGMENT => Err(WireError::Malformed),
            _ => Ok((nh, off)),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 6, traffic class and flow label at once.
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        put_u32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Set the traffic class, keeping version and flow label.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let v = get_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        let v = (v & 0xf00f_ffff) | (u32::from(tc) << 20);
        put_u32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Set the flow label, keeping version and traffic class.
    #[inline]
    pub fn set_flow_label(&mut self, flow: u32) {
        let v = get_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        let v = (v & 0xfff0_0000) | (flow & 0x000f_ffff);
        put_u32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Set the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, len: u16) {
        put_u16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Set the next header.
    #[inline]
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = nh;
    }

    /// Set the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hl: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hl;
    }

    /// Set the source address.
    #[inline]
    pub fn set_src(&mut self, ip: &[u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(ip);
    }

    /// Set the destination address.
    #[inline]
    pub fn set_dst(&mut self, ip: &[u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(ip);
    }

    /// Mutable payload (`40..40 + payload_len`).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.payload_end();
        &mut self.buffer.as_mut()[field::PAYLOAD..end]
    }
}

/// Write a 40-byte header (traffic class 0, flow label 0) at the start of
/// `buf`. Returns 40, or `Truncated` if `buf` is shorter.
pub fn emit_header(
    buf: &mut [u8],
    src: &[u8; 16],
    dst: &[u8; 16],
    next_header: u8,
    hop_limit: u8,
    payload_len: u16,
) -> Result<usize, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
    p.set_version_tc_flow(0, 0);
    p.set_payload_len(payload_len);
    p.set_next_header(next_header);
    p.set_hop_limit(hop_limit);
    p.set_src(src);
    p.set_dst(dst);
    Ok(HEADER_LEN)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ethernet frame: ICMPv6 neighbor solicitation from
    /// fe80::5054:ff:fe12:3456 for fe80::21b:21ff:fe3a:4f80, with a source
    /// link-layer address option.
    pub(crate) const NS_FRAME: [u8; 86] = [
        0x33, 0x33, 0xff, 0x3a, 0x4f, 0x80, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x3a, 0x4f, 0x80, 0x87, 0x00, 0xb0, 0x94, 0x00, 0x00,
        0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x1b, 0x21, 0xff, 0xfe,
        0x3a, 0x4f, 0x80, 0x01, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
    ];

    /// IPv6 packet: MLDv2 report to ff02::16 behind a hop-by-hop header with
    /// a Router Alert option.
    pub(crate) const MLD_HBH: [u8; 76] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x16, 0x3a, 0x00, 0x05, 0x02, 0x00,
        0x00, 0x01, 0x00, 0x8f, 0x00, 0xb8, 0xe4, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00,
        0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0x12, 0x34,
        0x56,
    ];

    pub(crate) fn exercise<T: AsRef<[u8]>>(p: &Packet<T>) {
        let _ = (
            p.version(),
            p.traffic_class(),
            p.flow_label(),
            p.payload_len(),
            p.next_header(),
            p.hop_limit(),
            p.src(),
            p.dst(),
            p.src_u128(),
            p.dst_u128(),
            p.header().len(),
            p.payload().len(),
            p.packet().len(),
        );
        if let Ok((_, off)) = p.upper_layer() {
            assert!(off <= p.payload().len());
        }
    }

    #[test]
    fn neighbor_solicit() {
        let p = Packet::new_checked(&NS_FRAME[14..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0);
        assert_eq!(p.flow_label(), 0);
        assert_eq!(p.payload_len(), 32);
        assert_eq!(p.next_header(), NEXT_HEADER_ICMPV6);
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.src_u128(), 0xfe80_0000_0000_0000_5054_00ff_fe12_3456);
        assert_eq!(p.dst_u128(), 0xff02_0000_0000_0000_0000_0001_ff3a_4f80);
        assert_eq!(p.payload().len(), 32);
        assert_eq!(p.upper_layer(), Ok((NEXT_HEADER_ICMPV6, 0)));
        exercise(&p);
    }

    #[test]
    fn hop_by_hop() {
        let p = Packet::new_checked(&MLD_HBH[..]).unwrap();
        assert_eq!(p.next_header(), NEXT_HEADER_HOPBYHOP);
        assert_eq!(p.hop_limit(), 1);
        assert_eq!(p.upper_layer(), Ok((NEXT_HEADER_ICMPV6, 8)));
        assert_eq!(p.payload()[8], 143);
        // Ethernet padding after the packet is ignored.
        let mut padded = MLD_HBH.to_vec();
        padded.extend_from_slice(&[0xee; 10]);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 36);
        assert_eq!(p.packet(), &MLD_HBH[..]);
    }

    fn with_ext(chain: &[u8], first: u8) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        emit_header(
            &mut b,
            &[0xfe; 16],
            &[0xfd; 16],
            first,
            64,
            chain.len() as u16,
        )
        .unwrap();
        b.extend_from_slice(chain);
        b
    }

    #[test]
    fn extension_chains() {
        // dst-opts (16 bytes) -> fragment (first) -> routing (8) -> TCP
        let mut chain = vec![NEXT_HEADER_FRAGMENT, 1];
        chain.extend_from_slice(&[0; 14]);
        chain.extend_from_slice(&[NEXT_HEADER_ROUTING, 0, 0x00, 0x01, 0, 0, 0, 42]);
        chain.extend_from_slice(&[NEXT_HEADER_TCP, 0, 0, 0, 0, 0, 0, 0]);
        chain.extend_from_slice(&[0x1f, 0x90, 0x00, 0x50]);
        let b = with_ext(&chain, NEXT_HEADER_DSTOPTS);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer(), Ok((NEXT_HEADER_TCP, 32)));

        // Non-first fragment: stop at the fragment header.
        let frag = [NEXT_HEADER_UDP, 0, 0x05, 0xa8, 0, 0, 0, 7, 1, 2, 3, 4];
        let b = with_ext(&frag, NEXT_HEADER_FRAGMENT);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer(), Ok((NEXT_HEADER_FRAGMENT, 0)));

        // Extension header running past the payload.
        let b = with_ext(
            &[NEXT_HEADER_TCP, 2, 0, 0, 0, 0, 0, 0],
            NEXT_HEADER_HOPBYHOP,
        );
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(WireError::Truncated));
        let b = with_ext(&[NEXT_HEADER_TCP], NEXT_HEADER_DSTOPTS);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(WireError::Truncated)
        );

        // Exactly 8 extension headers is fine; 9 is malformed.
        let eight: Vec<u8> = (0..8)
            .flat_map(|i| {
                [
                    if i == 7 {
                        NEXT_HEADER_UDP
                    } else {
                        NEXT_HEADER_DSTOPTS
                    },
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]
            })
            .collect();
        let b = with_ext(&eight, NEXT_HEADER_DSTOPTS);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Ok((NEXT_HEADER_UDP, 64))
        );
        let nine: Vec<u8> = (0..9)
            .flat_map(|i| {
                [
                    if i == 8 {
                        NEXT_HEADER_UDP
                    } else {
                        NEXT_HEADER_DSTOPTS
                    },
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ]
            })
            .collect();
        let b = with_ext(&nine, NEXT_HEADER_DSTOPTS);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().upper_layer(),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn errors_and_prefixes() {
        let ip = &NS_FRAME[14..];
        let mut b = ip.to_vec();
        b[0] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadVersion));
        for n in 0..=ip.len() {
            match Packet::new_checked(&ip[..n]) {
                Ok(p) => {
                    assert_eq!(n, ip.len());
                    exercise(&p);
                }
                Err(e) if n < 40 => assert_eq!(e, WireError::Truncated),
                Err(e) => assert_eq!(e, WireError::BadLength),
            }
        }
        for n in 0..=MLD_HBH.len() {
            if let Ok(p) = Packet::new_checked(&MLD_HBH[..n]) {
                exercise(&p);
            }
        }
    }

    #[test]
    fn setters_and_emit() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut buf = [0u8; 48];
        assert_eq!(
            emit_header(&mut buf, &src, &dst, NEXT_HEADER_UDP, 64, 8),
            Ok(40)
        );
        assert_eq!(
            emit_header(&mut buf[..39], &src, &dst, 0, 0, 0),
            Err(WireError::Truncated)
        );
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(
            (p.src(), p.dst(), p.next_header(), p.hop_limit()),
            (src, dst, NEXT_HEADER_UDP, 64)
        );
        p.set_traffic_class(0xb8);
        p.set_flow_label(0xabcde);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0xb8, 0xabcde)
        );
        p.set_traffic_class(0x01);
        assert_eq!(
            (p.version(), p.traffic_class(), p.flow_label()),
            (6, 0x01, 0xabcde)
        );
        p.set_hop_limit(3);
        p.set_src(&dst);
        p.set_dst(&src);
        p.set_next_header(NEXT_HEADER_TCP);
        p.payload_mut()[7] = 9;
        assert_eq!(p.hop_limit(), 3);
        assert_eq!(p.dst(), src);
        assert_eq!(p.payload()[7], 9);
        // Breaking the length field cannot make accessors panic.
        p.set_payload_len(0xffff);
        exercise(&p);
        assert_eq!(p.payload_mut().len(), 8);
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..160), fix in any::<bool>()) {
            if fix && data.len() >= 40 {
                data[0] = 0x60 | (data[0] & 0x0f);
                let pl = (data.len() - 40) as u16;
                data[4..6].copy_from_slice(&pl.to_be_bytes());
                // Favour extension headers.
                data[6] = [0, 43, 44, 60, 6, 17, 58][usize::from(data[6]) % 7];
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                exercise(&p);
                let mut copy = data.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                p.set_hop_limit(1);
                let _ = p.payload_mut().len();
            }
        }
    }
}
