//! ICMP for IPv4 (RFC 792) and an RFC 1812 error-message builder.
//!
//! [`Packet`] is a view over the ICMP message (the IPv4 payload). The
//! checksum covers the whole message, so [`Packet::verify_checksum`] and
//! [`Packet::fill_checksum`] use the whole buffer given to the view: pass
//! `ipv4::Packet::payload()` (which excludes Ethernet padding).

use super::checksum;
use super::ipv4;
use super::{get_u16, get_u32, put_u16, put_u32, WireError};

/// ICMP header length (type, code, checksum, rest-of-header).
pub const HEADER_LEN: usize = 8;
/// Type: echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// Type: echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// Type: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Type: parameter problem.
pub const TYPE_PARAM_PROBLEM: u8 = 12;
/// Dest-unreachable code: network unreachable.
pub const CODE_NET_UNREACHABLE: u8 = 0;
/// Dest-unreachable code: host unreachable.
pub const CODE_HOST_UNREACHABLE: u8 = 1;
/// Dest-unreachable code: protocol unreachable.
pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
/// Dest-unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Dest-unreachable code: fragmentation needed and DF set (next-hop MTU in
/// the low 16 bits of the rest-of-header, RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Time-exceeded code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;
/// Time-exceeded code: fragment reassembly time exceeded.
pub const CODE_REASSEMBLY_EXCEEDED: u8 = 1;
/// Largest ICMP error datagram (IP header included), RFC 1812 §4.3.2.3.
pub const MAX_ERROR_LEN: usize = 576;

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const DATA: usize = 8;
}

/// True for ICMP error message types (which must never trigger errors).
#[inline]
pub fn is_error_type(msg_type: u8) -> bool {
    matches!(msg_type, 3 | 4 | 5 | 11 | 12)
}

/// A view over an ICMPv4 message.
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

    /// The 32-bit rest-of-header word (e.g. next-hop MTU, pointer).
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::REST)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Bytes after the 8-byte header (echo data, or the quoted datagram).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// True if the checksum over the whole buffer verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
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

    /// Set the rest-of-header word.
    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        put_u32(self.buffer.as_mut(), field::REST, v);
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

    /// Recompute the checksum over the whole buffer and store it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// Build an ICMP error datagram: a 20-byte IPv4 header (`src` -> `dst`,
/// `ttl`, DF clear, ident 0) + ICMP header (`msg_type`, `code`, `rest`, e.g.
/// the next-hop MTU in the low 16 bits for [`CODE_FRAG_NEEDED`]) + as much of
/// `original_ip` (the offending IP datagram, from its IP header, without
/// link padding) as keeps the whole datagram within [`MAX_ERROR_LEN`] bytes.
/// Both checksums are filled. Returns the number of bytes written.
///
/// `out` must hold the whole result, i.e. at least
/// `min(576, 28 + original_ip.len())` bytes, else `Truncated`. The caller
/// is responsible for RFC 1812 §4.3.2.7 policy (no errors about errors,
/// broadcasts, non-first fragments, rate limiting).
#[allow(clippy::too_many_arguments)]
pub fn emit_error(
    out: &mut [u8],
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    msg_type: u8,
    code: u8,
    rest: u32,
    original_ip: &[u8],
) -> Result<usize, WireError> {
    let hdrs = ipv4::MIN_HEADER_LEN + HEADER_LEN;
    let quote = original_ip.len().min(MAX_ERROR_LEN - hdrs);
    let total = hdrs + quote;
    if out.len() < total {
        return Err(WireError::Truncated);
    }
    let out = &mut out[..total];
    ipv4::emit_header(
        out,
        src,
        dst,
        ipv4::PROTO_ICMP,
        ttl,
        (total - ipv4::MIN_HEADER_LEN) as u16,
        0,
    )?;
    let icmp_buf = &mut out[ipv4::MIN_HEADER_LEN..];
    icmp_buf[HEADER_LEN..].copy_from_slice(&original_ip[..quote]);
    let mut icmp = Packet::new_unchecked(icmp_buf);
    icmp.set_msg_type(msg_type);
    icmp.set_code(code);
    icmp.set_rest_of_header(rest);
    icmp.fill_checksum();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::tests::{ICMP_ECHO_FRAME, TCP_SYN_FRAME};
    use proptest::prelude::*;

    fn exercise<T: AsRef<[u8]>>(p: &Packet<T>) {
        let _ = (
            p.msg_type(),
            p.code(),
            p.checksum(),
            p.rest_of_header(),
            p.echo_ident(),
            p.echo_seq(),
            p.data().len(),
            p.verify_checksum(),
        );
    }

    #[test]
    fn echo_request() {
        let ip = ipv4::Packet::new_checked(&ICMP_ECHO_FRAME[14..]).unwrap();
        let p = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(p.msg_type(), TYPE_ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x2289);
        assert_eq!(p.echo_ident(), 0x1c2b);
        assert_eq!(p.echo_seq(), 1);
        assert_eq!(p.data().len(), 56);
        assert!(p.verify_checksum());
        assert!(!is_error_type(p.msg_type()));
        exercise(&p);
    }

    #[test]
    fn echo_reply_in_place() {
        let mut b = ICMP_ECHO_FRAME[34..].to_vec();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(TYPE_ECHO_REPLY);
        // Incremental update (type is the high byte of word 0) must agree
        // with a full recomputation.
        let inc = checksum::update16(0x2289, 0x0800, 0x0000);
        p.fill_checksum();
        assert_eq!(p.checksum(), inc);
        assert!(p.verify_checksum());
        p.set_echo_seq(2);
        p.set_echo_ident(9);
        p.set_code(0);
        p.data_mut()[0] = 0;
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!((p.echo_ident(), p.echo_seq()), (9, 2));
    }

    #[test]
    fn every_prefix() {
        let icmp = &ICMP_ECHO_FRAME[34..];
        for n in 0..=icmp.len() {
            match Packet::new_checked(&icmp[..n]) {
                Ok(p) => {
                    assert!(n >= 8);
                    exercise(&p);
                    assert_eq!(p.verify_checksum(), n == icmp.len());
                }
                Err(e) => {
                    assert!(n < 8);
                    assert_eq!(e, WireError::Truncated);
                }
            }
        }
    }

    fn check_error(out: &[u8], original: &[u8], quoted: usize) {
        let ip = ipv4::Packet::new_checked(out).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.total_len()), out.len());
        assert!(out.len() <= MAX_ERROR_LEN);
        assert_eq!(ip.protocol(), ipv4::PROTO_ICMP);
        assert!(!ip.dont_frag());
        let icmp = Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.data(), &original[..quoted]);
        // The quoted header parses (the prefix may be shorter than its
        // total length, so only check the fixed fields).
        let q = ipv4::Packet::new_unchecked(icmp.data());
        assert_eq!(q.version(), 4);
    }

    #[test]
    fn time_exceeded_for_syn() {
        let orig = &TCP_SYN_FRAME[14..];
        let mut out = [0u8; 1500];
        let n = emit_error(
            &mut out,
            [10, 0, 0, 254],
            [10, 0, 0, 2],
            64,
            TYPE_TIME_EXCEEDED,
            CODE_TTL_EXCEEDED,
            0,
            orig,
        )
        .unwrap();
        assert_eq!(n, 28 + orig.len());
        check_error(&out[..n], orig, orig.len());
        let icmp = Packet::new_checked(&out[20..n]).unwrap();
        assert_eq!(
            (icmp.msg_type(), icmp.code(), icmp.rest_of_header()),
            (11, 0, 0)
        );
        let ip = ipv4::Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(
            (ip.src(), ip.dst(), ip.ttl()),
            ([10, 0, 0, 254], [10, 0, 0, 2], 64)
        );

        // Exactly-sized output works; one byte less does not.
        let mut exact = vec![0u8; n];
        assert_eq!(
            emit_error(&mut exact, [1; 4], [2; 4], 64, 11, 0, 0, orig),
            Ok(n)
        );
        assert_eq!(
            emit_error(&mut exact[..n - 1], [1; 4], [2; 4], 64, 11, 0, 0, orig),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn frag_needed_is_capped_at_576() {
        // A 1500-byte DF datagram that does not fit a 1400-byte link.
        let mut big = vec![0u8; 1500];
        ipv4::emit_header(
            &mut big,
            [10, 0, 0, 2],
            [10, 9, 9, 9],
            ipv4::PROTO_UDP,
            63,
            1480,
            77,
        )
        .unwrap();
        for (i, b) in big[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut out = [0u8; 2048];
        let n = emit_error(
            &mut out,
            [10, 0, 0, 254],
            [10, 0, 0, 2],
            64,
            TYPE_DEST_UNREACHABLE,
            CODE_FRAG_NEEDED,
            1400,
            &big,
        )
        .unwrap();
        assert_eq!(n, 576);
        check_error(&out[..n], &big, 548);
        let icmp = Packet::new_checked(&out[20..n]).unwrap();
        assert_eq!(icmp.rest_of_header() & 0xffff, 1400);
        assert_eq!(
            emit_error(&mut out[..575], [0; 4], [0; 4], 1, 3, 4, 0, &big),
            Err(WireError::Truncated)
        );
        // Empty quote still yields a valid message.
        let n = emit_error(&mut out, [1; 4], [2; 4], 64, 3, 3, 0, &[]).unwrap();
        assert_eq!(n, 28);
        assert!(Packet::new_checked(&out[20..28]).unwrap().verify_checksum());
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                exercise(&p);
                let mut copy = data.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                p.fill_checksum();
                prop_assert!(p.verify_checksum());
            }
        }

        #[test]
        fn emit_error_roundtrip(original in proptest::collection::vec(any::<u8>(), 0..700), ty in any::<u8>(), code in any::<u8>(), rest in any::<u32>()) {
            let mut out = [0u8; 600];
            let n = emit_error(&mut out, [192, 0, 2, 1], [198, 51, 100, 7], 64, ty, code, rest, &original).unwrap();
            prop_assert_eq!(n, (28 + original.len()).min(576));
            let ip = ipv4::Packet::new_checked(&out[..n]).unwrap();
            prop_assert!(ip.verify_checksum());
            let icmp = Packet::new_checked(ip.payload()).unwrap();
            prop_assert!(icmp.verify_checksum());
            prop_assert_eq!((icmp.msg_type(), icmp.code(), icmp.rest_of_header()), (ty, code, rest));
            prop_assert_eq!(icmp.data(), &original[..n - 28]);
        }
    }
}
