//! Raw bindings to the system DPDK (22.11, found with pkg-config) and the C shim for its
//! static-inline functions and macros. Nothing here is safe to call directly: the safe
//! wrapper lives in `ferry_dataplane::dpdk`.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    // The shim exports DPDK's macro values; check them against the documented values
    // of DPDK 22.11 so a header change shows up here, not as a misconfigured port.
    #[test]
    fn flag_values_match_dpdk_22_11() {
        // SAFETY: these are plain `const` globals defined in shim.c.
        unsafe {
            let bit = |b: u32| 1u64 << b;
            // RTE_ETH_RSS_IP: IPV4 | FRAG_IPV4 | NONFRAG_IPV4_OTHER | IPV6 | FRAG_IPV6 |
            // NONFRAG_IPV6_OTHER | IPV6_EX
            assert_eq!(
                ferry_eth_rss_ip,
                bit(2) | bit(3) | bit(7) | bit(8) | bit(9) | bit(13) | bit(15)
            );
            // RTE_ETH_RSS_UDP: NONFRAG_IPV4_UDP | NONFRAG_IPV6_UDP | IPV6_UDP_EX
            assert_eq!(ferry_eth_rss_udp, bit(5) | bit(11) | bit(17));
            // RTE_ETH_RSS_TCP: NONFRAG_IPV4_TCP | NONFRAG_IPV6_TCP | IPV6_TCP_EX
            assert_eq!(ferry_eth_rss_tcp, bit(4) | bit(10) | bit(16));
            assert_eq!(ferry_eth_tx_offload_mbuf_fast_free, 1 << 16);
            assert_eq!(ferry_eth_rx_offload_ipv4_cksum, 1 << 1);
            // RTE_MBUF_F_RX_IP_CKSUM_BAD | _GOOD; GOOD alone (both: NONE, neither: UNKNOWN).
            assert_eq!(ferry_mbuf_f_rx_ip_cksum_mask, (1 << 4) | (1 << 7));
            assert_eq!(ferry_mbuf_f_rx_ip_cksum_good, 1 << 7);
            assert_eq!(ferry_mbuf_f_rx_outer_ip_cksum_bad, 1 << 5);
            assert_eq!(ferry_ptype_tunnel_mask, 0xf000);
            assert_eq!(ferry_eth_mq_rx_rss, 1);
            assert_eq!(ferry_ring_f_sp_enq, 1);
            assert_eq!(ferry_ring_f_sc_deq, 2);
            assert_eq!(ferry_pktmbuf_headroom_default, 128);
        }
    }
}
