//! Ethernet II frames, MAC address helpers and a one-shot L2 classifier.
//!
//! [`Frame`] is a view over the 14-byte Ethernet header and what follows.
//! [`parse_l2`] looks through at most one 802.1Q tag (or an 802.1ad S-tag
//! followed by an 802.1Q C-tag) and reports where the L3 header starts.

use core::fmt;

use super::{get_array, get_u16, put_u16, WireError};

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// EtherType: IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType: ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType: IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// TPID: 802.1Q customer VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// TPID: 802.1ad service VLAN tag (QinQ outer tag).
pub const ETHERTYPE_QINQ: u16 = 0x88A8;

/// A MAC address.
pub type MacAddr = [u8; 6];

/// ff:ff:ff:ff:ff:ff.
pub const BROADCAST: MacAddr = [0xff; 6];

/// True for group addresses (I/G bit set), including broadcast.
#[inline]
pub fn is_multicast(mac: &MacAddr) -> bool {
    mac[0] & 0x01 != 0
}

/// True for ff:ff:ff:ff:ff:ff.
#[inline]
pub fn is_broadcast(mac: &MacAddr) -> bool {
    *mac == BROADCAST
}

/// True for an individual (unicast) address.
#[inline]
pub fn is_unicast(mac: &MacAddr) -> bool {
    !is_multicast(mac)
}

/// Display adapter returned by [`format_mac`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MacDisplay(pub MacAddr);

impl fmt::Display for MacDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Lowercase colon-separated hex (`52:54:00:12:34:56`), without allocating.
#[inline]
pub fn format_mac(mac: &MacAddr) -> impl fmt::Display {
    MacDisplay(*mac)
}

/// Parse `aa:bb:cc:dd:ee:ff` (exactly six groups of two hex digits, either
/// case). Returns `None` on anything else.
pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

/// Multicast MAC for an IPv4 group: 01:00:5e + low 23 bits (RFC 1112 §6.4).
#[inline]
pub fn ipv4_multicast_mac(ip: [u8; 4]) -> MacAddr {
    [0x01, 0x00, 0x5e, ip[1] & 0x7f, ip[2], ip[3]]
}

/// Multicast MAC for an IPv6 group: 33:33 + low 32 bits (RFC 2464 §7).
#[inline]
pub fn ipv6_multicast_mac(ip: &[u8; 16]) -> MacAddr {
    [0x33, 0x33, ip[12], ip[13], ip[14], ip[15]]
}

/// Solicited-node multicast address ff02::1:ffXX:XXXX (RFC 4291 §2.7.1).
#[inline]
pub fn ipv6_solicited_node(ip: &[u8; 16]) -> [u8; 16] {
    [
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, ip[13], ip[14], ip[15],
    ]
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// A view over an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wrap without validation; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wrap after checking the buffer holds at least [`HEADER_LEN`] bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Frame { buffer })
    }

    /// Give the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    #[inline]
    pub fn dst(&self) -> MacAddr {
        get_array(self.buffer.as_ref(), field::DST.start)
    }

    /// Source MAC.
    #[inline]
    pub fn src(&self) -> MacAddr {
        get_array(self.buffer.as_ref(), field::SRC.start)
    }

    /// The outer EtherType (a TPID if the frame is VLAN-tagged).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// Bytes after the 14-byte header (including any VLAN tags).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Set the destination MAC.
    #[inline]
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    /// Set the source MAC.
    #[inline]
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    /// Set the outer EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        put_u16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }

    /// Mutable bytes after the 14-byte header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// Write an untagged Ethernet header; returns [`HEADER_LEN`].
pub fn emit(
    buf: &mut [u8],
    dst: MacAddr,
    src: MacAddr,
    ethertype: u16,
) -> Result<usize, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let mut f = Frame::new_unchecked(buf);
    f.set_dst(dst);
    f.set_src(src);
    f.set_ethertype(ethertype);
    Ok(HEADER_LEN)
}

/// Result of [`parse_l2`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2 {
    /// TCI of the (inner) 802.1Q tag, if the frame was tagged.
    pub vlan_tci: Option<u16>,
    /// EtherType of the L3 payload (after any tags).
    pub ethertype: u16,
    /// Offset of the L3 header from the start of the frame.
    pub l3_offset: usize,
}

impl L2 {
    /// VLAN id (low 12 bits of the TCI), if tagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci.map(|t| t & 0x0fff)
    }
}

/// Classify a frame's L2 encapsulation.
///
/// * untagged: `vlan_tci = None`, `l3_offset = 14`;
/// * one 802.1Q tag (0x8100): that TCI, `l3_offset = 18`;
/// * 802.1ad S-tag (0x88A8) followed by an 802.1Q C-tag: the inner (C-tag)
///   TCI, `l3_offset = 22`. The outer TCI is not reported.
///
/// Errors: `Truncated` if the buffer ends inside the header or tags;
/// `Unsupported` for two 0x8100 tags (legacy QinQ), an S-tag not followed by
/// a C-tag, a third tag, or an 802.3 length field (< 0x0600) instead of an
/// EtherType.
pub fn parse_l2(buf: &[u8]) -> Result<L2, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let mut ethertype = get_u16(buf, field::ETHERTYPE);
    let mut off = HEADER_LEN;
    let mut vlan_tci = None;
    if ethertype == ETHERTYPE_QINQ {
        if buf.len() < off + VLAN_TAG_LEN {
            return Err(WireError::Truncated);
        }
        ethertype = get_u16(buf, off + 2);
        off += VLAN_TAG_LEN;
        if ethertype != ETHERTYPE_VLAN {
            return Err(WireError::Unsupported);
        }
    }
    if ethertype == ETHERTYPE_VLAN {
        if buf.len() < off + VLAN_TAG_LEN {
            return Err(WireError::Truncated);
        }
        vlan_tci = Some(get_u16(buf, off));
        ethertype = get_u16(buf, off + 2);
        off += VLAN_TAG_LEN;
    }
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ || ethertype < 0x0600 {
        return Err(WireError::Unsupported);
    }
    Ok(L2 {
        vlan_tci,
        ethertype,
        l3_offset: off,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Captured ARP request (who-has 24.166.173.159 tell 24.166.172.1),
    /// padded to the 60-byte minimum.
    const ARP_FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54, 0x18, 0xa6,
        0xac, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0xa6, 0xad, 0x9f, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn frame_fields() {
        let f = Frame::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(f.dst(), BROADCAST);
        assert_eq!(f.src(), [0x00, 0x07, 0x0d, 0xaf, 0xf4, 0x54]);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.payload().len(), 46);
        assert!(is_broadcast(&f.dst()) && is_multicast(&f.dst()));
        assert!(is_unicast(&f.src()));
        let l2 = parse_l2(&ARP_FRAME).unwrap();
        assert_eq!(
            l2,
            L2 {
                vlan_tci: None,
                ethertype: ETHERTYPE_ARP,
                l3_offset: 14
            }
        );
    }

    #[test]
    fn frame_setters_and_emit() {
        let mut buf = ARP_FRAME;
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        f.set_dst([1, 2, 3, 4, 5, 6]);
        f.set_src([7, 8, 9, 10, 11, 12]);
        f.set_ethertype(ETHERTYPE_IPV6);
        f.payload_mut()[0] = 0x60;
        let f = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.dst(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV6);
        assert_eq!(buf[14], 0x60);

        let mut out = [0u8; 14];
        assert_eq!(emit(&mut out, BROADCAST, [2; 6], ETHERTYPE_ARP), Ok(14));
        assert_eq!(&out[..6], &BROADCAST);
        assert_eq!(&out[12..], &[0x08, 0x06]);
        assert_eq!(
            emit(&mut out[..13], BROADCAST, [2; 6], 0),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn vlan_tagged() {
        // 802.1Q tag, PCP 5, VID 100, carrying IPv4.
        let mut f = vec![0u8; 60];
        f[12..18].copy_from_slice(&[0x81, 0x00, 0xa0, 0x64, 0x08, 0x00]);
        let l2 = parse_l2(&f).unwrap();
        assert_eq!(l2.vlan_tci, Some(0xa064));
        assert_eq!(l2.vlan_id(), Some(100));
        assert_eq!(l2.ethertype, ETHERTYPE_IPV4);
        assert_eq!(l2.l3_offset, 18);

        // QinQ: S-tag VID 10, C-tag VID 200, IPv6 inside.
        f[12..22].copy_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0xc8, 0x86, 0xdd]);
        let l2 = parse_l2(&f).unwrap();
        assert_eq!(l2.vlan_id(), Some(200));
        assert_eq!(l2.ethertype, ETHERTYPE_IPV6);
        assert_eq!(l2.l3_offset, 22);

        // S-tag not followed by a C-tag.
        f[12..18].copy_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x08, 0x00]);
        assert_eq!(parse_l2(&f), Err(WireError::Unsupported));
        // Double 0x8100.
        f[12..22].copy_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x81, 0x00, 0x00, 0xc8, 0x08, 0x00]);
        assert_eq!(parse_l2(&f), Err(WireError::Unsupported));
        // 802.3 length field.
        f[12..14].copy_from_slice(&[0x00, 0x2e]);
        assert_eq!(parse_l2(&f), Err(WireError::Unsupported));
        // Truncated tag.
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_l2(&f[..17]), Err(WireError::Truncated));
        assert_eq!(parse_l2(&f[..13]), Err(WireError::Truncated));
    }

    #[test]
    fn mac_helpers() {
        let m = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
        assert_eq!(format_mac(&m).to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(parse_mac("52:54:00:AB:cd:ef"), Some(m));
        assert_eq!(
            parse_mac(&format_mac(&BROADCAST).to_string()),
            Some(BROADCAST)
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52:54:00:ab:cd:e",
            "52:54:00:ab:cd:eg",
            "52-54-00-ab-cd-ef",
            "52:54:00:ab:cd:+f",
            "52:54:00:ab:cd:ef:",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(
            ipv4_multicast_mac([224, 0, 0, 251]),
            [0x01, 0x00, 0x5e, 0, 0, 0xfb]
        );
        assert_eq!(
            ipv4_multicast_mac([239, 255, 1, 2]),
            [0x01, 0x00, 0x5e, 0x7f, 1, 2]
        );
        let mut ip = [0u8; 16];
        ip[0] = 0xff;
        ip[1] = 0x02;
        ip[15] = 1;
        assert_eq!(ipv6_multicast_mac(&ip), [0x33, 0x33, 0, 0, 0, 1]);
        // fe80::21b:21ff:fe3a:4f80 -> ff02::1:ff3a:4f80
        let t = [
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x1b, 0x21, 0xff, 0xfe, 0x3a, 0x4f, 0x80,
        ];
        let sn = ipv6_solicited_node(&t);
        assert_eq!(
            sn,
            [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0x3a, 0x4f, 0x80]
        );
        assert_eq!(
            ipv6_multicast_mac(&sn),
            [0x33, 0x33, 0xff, 0x3a, 0x4f, 0x80]
        );
    }

    #[test]
    fn every_prefix() {
        for n in 0..=ARP_FRAME.len() {
            let p = &ARP_FRAME[..n];
            assert_eq!(Frame::new_checked(p).is_ok(), n >= HEADER_LEN);
            assert_eq!(parse_l2(p).is_ok(), n >= HEADER_LEN);
        }
    }

    proptest! {
        #[test]
        fn never_panics(
            mut data in proptest::collection::vec(any::<u8>(), 0..64),
            tags in proptest::collection::vec(prop_oneof![Just(ETHERTYPE_VLAN), Just(ETHERTYPE_QINQ), any::<u16>()], 0..3),
        ) {
            // Steer towards tagged frames: write TPIDs at 12, 16, 20.
            for (i, t) in tags.iter().enumerate() {
                let at = 12 + 4 * i;
                if data.len() >= at + 2 {
                    data[at..at + 2].copy_from_slice(&t.to_be_bytes());
                }
            }
            if let Ok(f) = Frame::new_checked(&data[..]) {
                let _ = (f.dst(), f.src(), f.ethertype(), f.payload().len());
            }
            if let Ok(l2) = parse_l2(&data) {
                prop_assert!(l2.l3_offset <= data.len());
                let _ = l2.vlan_id();
            }
        }

        #[test]
        fn mac_roundtrip(m in any::<[u8; 6]>()) {
            prop_assert_eq!(parse_mac(&format_mac(&m).to_string()), Some(m));
        }

        #[test]
        fn parse_mac_never_panics(s in "\\PC{0,24}") {
            let _ = parse_mac(&s);
        }
    }
}
