#include "shim.h"
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_prefetch.h>
#include <rte_vect.h>
#include <rte_thash.h>

uint16_t ferry_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_rx_burst(port, queue, pkts, n); }
uint16_t ferry_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{ return rte_eth_tx_burst(port, queue, pkts, n); }
struct rte_mbuf *ferry_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int ferry_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n)
{ return rte_pktmbuf_alloc_bulk(mp, mbufs, n); }
void ferry_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void ferry_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n) { rte_pktmbuf_free_bulk(mbufs, n); }
char *ferry_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char *ferry_pktmbuf_adj(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int ferry_pktmbuf_trim(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
char *ferry_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
int ferry_pktmbuf_is_contiguous(const struct rte_mbuf *m) { return rte_pktmbuf_is_contiguous(m); }
uint16_t ferry_pktmbuf_headroom(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t ferry_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
void *ferry_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
unsigned ferry_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{ return rte_ring_enqueue_burst(r, objs, n, NULL); }
unsigned ferry_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{ return rte_ring_dequeue_burst(r, objs, n, NULL); }
unsigned ferry_lcore_id(void) { return rte_lcore_id(); }
uint64_t ferry_rdtsc(void) { return rte_rdtsc(); }
int ferry_errno(void) { return rte_errno; }
void ferry_prefetch0(const void *p) { rte_prefetch0(p); }
int ferry_lpm_lookup(const struct rte_lpm *lpm, uint32_t ip, uint32_t *next_hop)
{ return rte_lpm_lookup(lpm, ip, next_hop); }
int ferry_lpm_lookup_bulk(const struct rte_lpm *lpm, const uint32_t *ips, uint32_t *next_hops, unsigned n)
{ return rte_lpm_lookup_bulk(lpm, ips, next_hops, n); }
void ferry_lpm_lookupx4(const struct rte_lpm *lpm, const uint32_t ips[4], uint32_t hop[4], uint32_t defv)
{
	xmm_t ip = _mm_loadu_si128((const __m128i *)ips);
	rte_lpm_lookupx4(lpm, ip, hop, defv);
}

const uint64_t ferry_eth_rss_ip = RTE_ETH_RSS_IP;
const uint64_t ferry_eth_rss_udp = RTE_ETH_RSS_UDP;
const uint64_t ferry_eth_rss_tcp = RTE_ETH_RSS_TCP;
const uint64_t ferry_eth_tx_offload_mbuf_fast_free = RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE;
const uint64_t ferry_eth_rx_offload_ipv4_cksum = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
const uint64_t ferry_mbuf_f_rx_ip_cksum_mask = RTE_MBUF_F_RX_IP_CKSUM_MASK;
const uint64_t ferry_mbuf_f_rx_ip_cksum_good = RTE_MBUF_F_RX_IP_CKSUM_GOOD;
const uint64_t ferry_mbuf_f_rx_outer_ip_cksum_bad = RTE_MBUF_F_RX_OUTER_IP_CKSUM_BAD;
const uint32_t ferry_ptype_tunnel_mask = RTE_PTYPE_TUNNEL_MASK;
const uint32_t ferry_eth_mq_rx_rss = RTE_ETH_MQ_RX_RSS;
const uint32_t ferry_ring_f_sp_enq = RING_F_SP_ENQ;
const uint32_t ferry_ring_f_sc_deq = RING_F_SC_DEQ;
const uint16_t ferry_pktmbuf_headroom_default = RTE_PKTMBUF_HEADROOM;

uint32_t ferry_softrss(const uint32_t *input, uint32_t len, const uint8_t *key)
{
	return rte_softrss((uint32_t *)input, len, key);
}
