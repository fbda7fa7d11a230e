//! ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861) messages.
//!
//! [`Packet`] is a view over the ICMPv6 message (the upper-layer payload of
//! an IPv6 packet). Checksums include the IPv6 pseudo-header, so
//! [`Packet::verify_checksum`] / [`Packet::fill_checksum`] take the
//! addresses and cover the whole buffer given to the view.
//!
//! Builders write a complete IPv6 packet (header + ICMPv6) into `out`:
//! [`emit_neighbor_advert`], [`emit_neighbor_solicit`] and [`emit_error`].

use super::checksum;
use super::ethernet::{ipv6_solicited_node, MacAddr};
use super::ipv6;
use super::{get_array, get_u16, get_u32, put_u16, put_u32, WireError};

/// ICMPv6 header length (type, code, checksum, 4-byte body word).
pub const HEADER_LEN: usize = 8;
/// Type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 1;
/// Type: packet too big.
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
/// Type: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 3;
/// Type: parameter problem.
pub const TYPE_PARAM_PROBLEM: u8 = 4;
/// Type: echo request.
pub const TYPE_ECHO_REQUEST: u8 = 128;
/// Type: echo reply.
pub const TYPE_ECHO_REPLY: u8 = 129;
/// Type: router solicitation.
pub const TYPE_ROUTER_SOLICIT: u8 = 133;
/// Type: router advertisement.
pub const TYPE_ROUTER_ADVERT: u8 = 134;
/// Type: neighbor solicitation.
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// Type: neighbor advertisement.
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Type: redirect.
pub const TYPE_REDIRECT: u8 = 137;
/// Dest-unreachable code: no route to destination.
pub const CODE_NO_ROUTE: u8 = 0;
/// Dest-unreachable code: address unreachable.
pub const CODE_ADDR_UNREACHABLE: u8 = 3;
/// Dest-unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 4;
/// Time-exceeded code: hop limit exceeded in transit.
pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;
/// NDP option: source link-layer address.
pub const NDP_OPT_SOURCE_LLADDR: u8 = 1;
/// NDP option: target link-layer address.
pub const NDP_OPT_TARGET_LLADDR: u8 = 2;
/// NA flag: router.
pub const NA_FLAG_ROUTER: u8 = 0x80;
/// NA flag: solicited.
pub const NA_FLAG_SOLICITED: u8 = 0x40;
/// NA flag: override.
pub const NA_FLAG_OVERRIDE: u8 = 0x20;
/// Length of the NS/NA body (header word + 16-byte target).
pub const NDP_NS_NA_LEN: usize = 24;
/// Length of an Ethernet link-layer address option.
pub const NDP_LLADDR_OPT_LEN: usize = 8;
/// Hop limit required on ND messages (RFC 4861 §7.1).
pub const NDP_HOP_LIMIT: u8 = 255;
/// Hop limit used for locally generated error messages.
pub const ERROR_HOP_LIMIT: u8 = 64;
/// Most NDP options [`Packet::ndp_lladdr_option`] will look at.
pub const MAX_NDP_OPTIONS: usize = 16;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const BODY: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const NA_FLAGS: usize = 4;
    pub const DATA: usize = 8;
    pub const NDP_TARGET: Range<usize> = 8..24;
}

/// True for ICMPv6 error types (< 128), which must never trigger errors.
#[inline]
pub fn is_error_type(msg_type: u8) -> bool {
    msg_type < 128
}

/// A view over an ICMPv6 message.
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

    /// Wrap after checking `len >= 8` (`Truncated`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Give the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The 32-bit word after the checksum (MTU, pointer, NA flags…).
    #[inline]
    pub fn body_word(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::BODY)
    }

    /// Echo identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number.
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// NA flags byte (R/S/O in the top bits); meaningful for NA only.
    #[inline]
    pub fn na_flags(&self) -> u8 {
        self.buffer.as_ref()[field::NA_FLAGS]
    }

    /// Bytes after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// True if the checksum (with the IPv6 pseudo-header) verifies.
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        let b = self.buffer.as_ref();
        let s = checksum::add(
            checksum::pseudo_v6(src, dst, ipv6::NEXT_HEADER_ICMPV6, b.len() as u32),
            checksum::sum(b),
        );
        checksum::fold(s) == 0xffff
    }

    /// Target address of an NS or NA (None for other types or if shorter
    /// than 24 bytes).
    pub fn ndp_target(&self) -> Option<[u8; 16]> {
        let b = self.buffer.as_ref();
        match self.msg_type() {
            TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT if b.len() >= NDP_NS_NA_LEN => {
                Some(get_array(b, field::NDP_TARGET.start))
            }
            _ => None,
        }
    }

    /// Offset of the NDP options for ND message types.
    fn ndp_options_offset(&self) -> Option<usize> {
        match self.msg_type() {
            TYPE_ROUTER_SOLICIT => Some(8),
            TYPE_ROUTER_ADVERT => Some(16),
            TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT => Some(NDP_NS_NA_LEN),
            TYPE_REDIRECT => Some(40),
            _ => None,
        }
    }

    /// The first Ethernet link-layer address option of type `opt_type`
    /// ([`NDP_OPT_SOURCE_LLADDR`] or [`NDP_OPT_TARGET_LLADDR`]) of an ND
    /// message (RS, RA, NS, NA, redirect). Walks at most
    /// [`MAX_NDP_OPTIONS`] options; returns `None` if there is none, if an
    /// option has length 0 or runs past the buffer (RFC 4861 §4.6: such a
    /// packet must be discarded), or if the matching option is too short
    /// for a MAC.
    pub fn ndp_lladdr_option(&self, opt_type: u8) -> Option<MacAddr> {
        let b = self.buffer.as_ref();
        let mut off = self.ndp_options_offset()?;
        for _ in 0..MAX_NDP_OPTIONS {
            let hdr = b.get(off..off + 2)?;
            let len = usize::from(hdr[1]) * 8;
            if len == 0 || off + len > b.len() {
                return None;
            }
            if hdr[0] == opt_type {
                return if len >= NDP_LLADDR_OPT_LEN {
                    Some(get_array(b, off + 2))
                } else {
                    None
                };
            }
            off += len;
        }
        None
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the message type.
    #[inline]
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }

    /// Set the code.
    #[inline]
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Set the 32-bit word after the checksum.
    #[inline]
    pub fn set_body_word(&mut self, v: u32) {
        put_u32(self.buffer.as_mut(), field::BODY, v);
    }

    /// Set the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }

    /// Set the echo sequence number.
    #[inline]
    pub fn set_echo_seq(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::ECHO_SEQ, v);
    }

    /// Mutable bytes after the 8-byte header.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Recompute the checksum (pseudo-header + whole buffer) and store it.
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let s = checksum::add(
            checksum::pseudo_v6(src, dst, ipv6::NEXT_HEADER_ICMPV6, b.len() as u32),
            checksum::sum(b),
        );
        self.set_checksum(checksum::finish(s));
    }
}

/// Write an IPv6 header + NS/NA body + optional link-layer address option.
#[allow(clippy::too_many_arguments)]
fn emit_ns_na(
    out: &mut [u8],
    src: &[u8; 16],
    dst: &[u8; 16],
    msg_type: u8,
    flags: u8,
    target: &[u8; 16],
    opt: Option<(u8, MacAddr)>,
) -> Result<usize, WireError> {
    let icmp_len = NDP_NS_NA_LEN + if opt.is_some() { NDP_LLADDR_OPT_LEN } else { 0 };
    let total = ipv6::HEADER_LEN + icmp_len;
    if out.len() < total {
        return Err(WireError::Truncated);
    }
    let out = &mut out[..total];
    ipv6::emit_header(
        out,
        src,
        dst,
        ipv6::NEXT_HEADER_ICMPV6,
        NDP_HOP_LIMIT,
        icmp_len as u16,
    )?;
    let icmp = &mut out[ipv6::HEADER_LEN..];
    icmp[..NDP_NS_NA_LEN].fill(0);
    icmp[field::NDP_TARGET].copy_from_slice(target);
    if let Some((opt_type, mac)) = opt {
        icmp[NDP_NS_NA_LEN] = opt_type;
        icmp[NDP_NS_NA_LEN + 1] = 1;
        icmp[NDP_NS_NA_LEN + 2..].copy_from_slice(&mac);
    }
    let mut p = Packet::new_unchecked(icmp);
    p.set_msg_type(msg_type);
    p.set_code(0);
    p.set_body_word(u32::from(flags) << 24);
    p.fill_checksum(src, dst);
    Ok(total)
}

/// Build a neighbor advertisement (IPv6 header with hop limit 255 + NA for
/// `target` with `flags` — [`NA_FLAG_ROUTER`] | [`NA_FLAG_SOLICITED`] |
/// [`NA_FLAG_OVERRIDE`] — + target link-layer address option carrying
/// `target_mac`). 72 bytes; `Truncated` if `out` is shorter.
pub fn emit_neighbor_advert(
    out: &mut [u8],
    src: &[u8; 16],
    dst: &[u8; 16],
    target: &[u8; 16],
    target_mac: MacAddr,
    flags: u8,
) -> Result<usize, WireError> {
    emit_ns_na(
        out,
        src,
        dst,
        TYPE_NEIGHBOR_ADVERT,
        flags & (NA_FLAG_ROUTER | NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE),
        target,
        Some((NDP_OPT_TARGET_LLADDR, target_mac)),
    )
}

/// Build a multicast neighbor solicitation for `target`: destination is the
/// solicited-node address of `target`, hop limit 255, with a source
/// link-layer address option carrying `src_mac` (72 bytes). If `src` is the
/// unspecified address (duplicate address detection) the option is omitted
/// as RFC 4861 §4.3 requires (64 bytes). `Truncated` if `out` is too short.
pub fn emit_neighbor_solicit(
    out: &mut [u8],
    src: &[u8; 16],
    target: &[u8; 16],
    src_mac: MacAddr,
) -> Result<usize, WireError> {
    let dst = ipv6_solicited_node(target);
    let opt = if *src == [0u8; 16] {
        None
    } else {
        Some((NDP_OPT_SOURCE_LLADDR, src_mac))
    };
    emit_ns_na(out, src, &dst, TYPE_NEIGHBOR_SOLICIT, 0, target, opt)
}

/// Build an ICMPv6 error: IPv6 header (hop limit 64) + ICMPv6 header
/// (`msg_type`, `code`, `param` — MTU for packet-too-big, pointer for
/// parameter problem, 0 otherwise) + as much of `original_ip` (the offending
/// packet from its IPv6 header, without link padding) as keeps the whole
/// packet within the 1280-byte minimum MTU (RFC 4443 §2.4(c)). Checksum
/// filled. `out` must hold at least `min(1280, 48 + original_ip.len())`
/// bytes, else `Truncated`. Policy (no errors about errors, rate limiting)
/// is the caller's.
#[allow(clippy::too_many_arguments)]
pub fn emit_error(
    out: &mut [u8],
    src: &[u8; 16],
    dst: &[u8; 16],
    msg_type: u8,
    code: u8,
    param: u32,
    original_ip: &[u8],
) -> Result<usize, WireError> {
    let hdrs = ipv6::HEADER_LEN + HEADER_LEN;
    let quote = original_ip.len().min(ipv6::MIN_MTU - hdrs);
    let total = hdrs + quote;
    if out.len() < total {
        return Err(WireError::Truncated);
    }
    let out = &mut out[..total];
    ipv6::emit_header(
        out,
        src,
        dst,
        ipv6::NEXT_HEADER_ICMPV6,
        ERROR_HOP_LIMIT,
        (total - ipv6::HEADER_LEN) as u16,
    )?;
    let icmp = &mut out[ipv6::HEADER_LEN..];
    icmp[HEADER_LEN..].copy_from_slice(&original_ip[..quote]);
    let mut p = Packet::new_unchecked(icmp);
    p.set_msg_type(msg_type);
    p.set_code(code);
    p.set_body_word(param);
    p.fill_checksum(src, dst);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv6::tests::{MLD_HBH, NS_FRAME};
    use proptest::prelude::*;

    const ME: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x1b, 0x21, 0xff, 0xfe, 0x3a, 0x4f, 0x80,
    ];
    const PEER: [u8; 16] = [
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x12, 0x34, 0x56,
    ];
    const MY_MAC: MacAddr = [0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x80];
    const PEER_MAC: MacAddr = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn exercise<T: AsRef<[u8]>>(p: &Packet<T>) {
        let _ = (
            p.msg_type(),
            p.code(),
            p.checksum(),
            p.body_word(),
            p.echo_ident(),
            p.echo_seq(),
            p.na_flags(),
            p.data().len(),
            p.verify_checksum(&PEER, &ME),
            p.ndp_target(),
            p.ndp_lladdr_option(NDP_OPT_SOURCE_LLADDR),
            p.ndp_lladdr_option(NDP_OPT_TARGET_LLADDR),
        );
    }

    #[test]
    fn parse_real_ns() {
        let ip = ipv6::Packet::new_checked(&NS_FRAME[14..]).unwrap();
        let (proto, off) = ip.upper_layer().unwrap();
        assert_eq!(proto, ipv6::NEXT_HEADER_ICMPV6);
        let p = Packet::new_checked(&ip.payload()[off..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_NEIGHBOR_SOLICIT);
        assert_eq!(p.code(), 0);
        assert!(p.verify_checksum(&ip.src(), &ip.dst()));
        // The pseudo-header matters: another destination fails.
        assert!(!p.verify_checksum(&ip.src(), &ME));
        assert_eq!(p.ndp_target(), Some(ME));
        assert_eq!(p.ndp_lladdr_option(NDP_OPT_SOURCE_LLADDR), Some(PEER_MAC));
        assert_eq!(p.ndp_lladdr_option(NDP_OPT_TARGET_LLADDR), None);
        assert_eq!(ip.dst(), ipv6_solicited_node(&ME));
        exercise(&p);
    }

    #[test]
    fn builder_ns_matches_capture() {
        let mut out = [0u8; 128];
        let n = emit_neighbor_solicit(&mut out, &PEER, &ME, PEER_MAC).unwrap();
        assert_eq!(n, 72);
        assert_eq!(&out[..n], &NS_FRAME[14..]);
        assert_eq!(
            emit_neighbor_solicit(&mut out[..71], &PEER, &ME, PEER_MAC),
            Err(WireError::Truncated)
        );

        // DAD: unspecified source, no option.
        let n = emit_neighbor_solicit(&mut out, &[0; 16], &ME, MY_MAC).unwrap();
        assert_eq!(n, 64);
        let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
        let p = Packet::new_checked(ip.payload()).unwrap();
        assert!(p.verify_checksum(&ip.src(), &ip.dst()));
        assert_eq!(p.ndp_target(), Some(ME));
        assert_eq!(p.ndp_lladdr_option(NDP_OPT_SOURCE_LLADDR), None);
    }

    #[test]
    fn builder_na_roundtrip() {
        let mut out = [0u8; 100];
        let flags = NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE;
        let n = emit_neighbor_advert(&mut out, &ME, &PEER, &ME, MY_MAC, flags).unwrap();
        assert_eq!(n, 72);
        let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        assert_eq!(ip.next_header(), ipv6::NEXT_HEADER_ICMPV6);
        assert_eq!(usize::from(ip.payload_len()), 32);
        let p = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(p.msg_type(), TYPE_NEIGHBOR_ADVERT);
        assert!(p.verify_checksum(&ME, &PEER));
        assert_eq!(p.na_flags(), flags);
        assert_eq!(p.body_word(), 0x6000_0000);
        assert_eq!(p.ndp_target(), Some(ME));
        assert_eq!(p.ndp_lladdr_option(NDP_OPT_TARGET_LLADDR), Some(MY_MAC));
        assert_eq!(p.ndp_lladdr_option(NDP_OPT_SOURCE_LLADDR), None);
        assert_eq!(
            emit_neighbor_advert(&mut out[..71], &ME, &PEER, &ME, MY_MAC, 0),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn ndp_option_walk() {
        // NS with a nonce option (type 14, 8 bytes) before the SLLA option.
        let mut b = NS_FRAME[54..].to_vec();
        b.truncate(24);
        b.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        b.extend_from_slice(&[1, 1, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            p.ndp_lladdr_option(1),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        // Zero-length option stops the walk.
        b[25] = 0;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().ndp_lladdr_option(1),
            None
        );
        // Option running past the end.
        b[25] = 3;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().ndp_lladdr_option(1),
            None
        );
        // Not an ND message.
        b[0] = TYPE_ECHO_REQUEST;
        b[25] = 1;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.ndp_lladdr_option(1), None);
        assert_eq!(p.ndp_target(), None);
        // Short NS: no target.
        let mut short = NS_FRAME[54..70].to_vec();
        short[0] = TYPE_NEIGHBOR_SOLICIT;
        let p = Packet::new_checked(&short[..]).unwrap();
        assert_eq!(p.ndp_target(), None);
        assert_eq!(p.ndp_lladdr_option(1), None);
    }

    #[test]
    fn mld_behind_hop_by_hop_verifies() {
        let ip = ipv6::Packet::new_checked(&MLD_HBH[..]).unwrap();
        let (proto, off) = ip.upper_layer().unwrap();
        assert_eq!(proto, ipv6::NEXT_HEADER_ICMPV6);
        let p = Packet::new_checked(&ip.payload()[off..]).unwrap();
        assert_eq!(p.msg_type(), 143);
        assert!(p.verify_checksum(&ip.src(), &ip.dst()));
    }

    #[test]
    fn echo_and_prefixes() {
        let mut b = [0u8; 16];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(TYPE_ECHO_REQUEST);
        p.set_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq(7);
        p.data_mut().copy_from_slice(b"abcdefgh");
        p.fill_checksum(&PEER, &ME);
        assert!(p.verify_checksum(&PEER, &ME));
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 7));
        p.set_msg_type(TYPE_ECHO_REPLY);
        assert!(!p.verify_checksum(&PEER, &ME));
        p.fill_checksum(&ME, &PEER);
        assert!(p.verify_checksum(&ME, &PEER));

        let icmp = &NS_FRAME[54..];
        for n in 0..=icmp.len() {
            match Packet::new_checked(&icmp[..n]) {
                Ok(p) => {
                    assert!(n >= 8);
                    exercise(&p);
                    assert_eq!(p.ndp_target().is_some(), n >= 24);
                    assert_eq!(p.ndp_lladdr_option(1).is_some(), n == icmp.len());
                }
                Err(e) => assert_eq!((n < 8, e), (true, WireError::Truncated)),
            }
        }
    }

    #[test]
    fn error_builder() {
        // Hop limit exceeded for a 1500-byte packet: quote capped at 1280.
        let mut orig = vec![0u8; 1500];
        ipv6::emit_header(
            &mut orig,
            &PEER,
            &[0x20; 16],
            ipv6::NEXT_HEADER_UDP,
            1,
            1460,
        )
        .unwrap();
        let mut out = [0u8; 1500];
        let n = emit_error(
            &mut out,
            &ME,
            &PEER,
            TYPE_TIME_EXCEEDED,
            CODE_HOP_LIMIT_EXCEEDED,
            0,
            &orig,
        )
        .unwrap();
        assert_eq!(n, 1280);
        let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(
            (ip.hop_limit(), ip.next_header()),
            (64, ipv6::NEXT_HEADER_ICMPV6)
        );
        assert_eq!(usize::from(ip.payload_len()), 1240);
        let p = Packet::new_checked(ip.payload()).unwrap();
        assert!(p.verify_checksum(&ME, &PEER));
        assert_eq!(p.data(), &orig[..1232]);
        assert_eq!(
            emit_error(&mut out[..1279], &ME, &PEER, 3, 0, 0, &orig),
            Err(WireError::Truncated)
        );

        // Packet too big quoting a small packet whole.
        let small = &NS_FRAME[14..];
        let n = emit_error(&mut out, &ME, &PEER, TYPE_PACKET_TOO_BIG, 0, 1400, small).unwrap();
        assert_eq!(n, 48 + small.len());
        let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
        let p = Packet::new_checked(ip.payload()).unwrap();
        assert!(p.verify_checksum(&ip.src(), &ip.dst()));
        assert_eq!(p.body_word(), 1400);
        assert_eq!(p.data(), small);
        assert!(is_error_type(p.msg_type()));
    }

    proptest! {
        #[test]
        fn never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..96), ty in prop_oneof![Just(133u8), Just(134), Just(135), Just(136), Just(137), any::<u8>()]) {
            if !data.is_empty() {
                data[0] = ty;
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                exercise(&p);
                let mut copy = data.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                p.fill_checksum(&ME, &PEER);
                prop_assert!(p.verify_checksum(&ME, &PEER));
            }
        }

        #[test]
        fn builders_roundtrip(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), target in any::<[u8; 16]>(), mac in any::<[u8; 6]>(), flags in any::<u8>(),
                              original in proptest::collection::vec(any::<u8>(), 0..1400), ty in 0u8..128, code in any::<u8>(), param in any::<u32>()) {
            let mut out = [0u8; 1300];
            let n = emit_neighbor_advert(&mut out, &src, &dst, &target, mac, flags).unwrap();
            let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
            let p = Packet::new_checked(ip.payload()).unwrap();
            prop_assert!(p.verify_checksum(&src, &dst));
            prop_assert_eq!(p.ndp_target(), Some(target));
            prop_assert_eq!(p.ndp_lladdr_option(NDP_OPT_TARGET_LLADDR), Some(mac));
            prop_assert_eq!(p.na_flags(), flags & 0xe0);

            let n = emit_neighbor_solicit(&mut out, &src, &target, mac).unwrap();
            let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
            prop_assert_eq!(ip.dst(), ipv6_solicited_node(&target));
            let p = Packet::new_checked(ip.payload()).unwrap();
            prop_assert!(p.verify_checksum(&src, &ip.dst()));
            prop_assert_eq!(p.ndp_target(), Some(target));
            let expect = if src == [0; 16] { None } else { Some(mac) };
            prop_assert_eq!(p.ndp_lladdr_option(NDP_OPT_SOURCE_LLADDR), expect);

            let n = emit_error(&mut out, &src, &dst, ty, code, param, &original).unwrap();
            prop_assert_eq!(n, (48 + original.len()).min(1280));
            let ip = ipv6::Packet::new_checked(&out[..n]).unwrap();
            let p = Packet::new_checked(ip.payload()).unwrap();
            prop_assert!(p.verify_checksum(&src, &dst));
            prop_assert_eq!((p.msg_type(), p.code(), p.body_word()), (ty, code, param));
            prop_assert_eq!(p.data(), &original[..n - 48]);
        }
    }
}
