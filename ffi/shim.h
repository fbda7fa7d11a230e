/* C shim: DPDK's static-inline functions and macros, as real symbols Rust can call. */
#ifndef FERRY_SHIM_H
#define FERRY_SHIM_H
#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>
#include <rte_fib.h>

uint16_t ferry_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t ferry_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
struct rte_mbuf *ferry_pktmbuf_alloc(struct rte_mempool *mp);
int ferry_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned n);
void ferry_pktmbuf_free(struct rte_mbuf *m);
void ferry_pktmbuf_free_bulk(struct rte_mbuf **mbufs, unsigned n);
char *ferry_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *ferry_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int ferry_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
char *ferry_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
int ferry_pktmbuf_is_contiguous(const struct rte_mbuf *m);
uint16_t ferry_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t ferry_pktmbuf_tailroom(const struct rte_mbuf *m);
void *ferry_pktmbuf_mtod(struct rte_mbuf *m);
unsigned ferry_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned ferry_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned ferry_lcore_id(void);
uint64_t ferry_rdtsc(void);
int ferry_errno(void);
/* rte_softrss: the Toeplitz hash of `len` 32-bit words of `input` (host order) with `key`. */
uint32_t ferry_softrss(const uint32_t *input, uint32_t len, const uint8_t *key);
void ferry_prefetch0(const void *p);
int ferry_lpm_lookup(const struct rte_lpm *lpm, uint32_t ip, uint32_t *next_hop);
int ferry_lpm_lookup_bulk(const struct rte_lpm *lpm, const uint32_t *ips, uint32_t *next_hops, unsigned n);
void ferry_lpm_lookupx4(const struct rte_lpm *lpm, const uint32_t ips[4], uint32_t hop[4], uint32_t defv);

/* Flag values Rust needs, exported as constants so tests can compare. */
extern const uint64_t ferry_eth_rss_ip;
extern const uint64_t ferry_eth_rss_udp;
extern const uint64_t ferry_eth_rss_tcp;
extern const uint64_t ferry_eth_tx_offload_mbuf_fast_free;
extern const uint64_t ferry_eth_rx_offload_ipv4_cksum;
extern const uint64_t ferry_mbuf_f_rx_ip_cksum_mask;
extern const uint64_t ferry_mbuf_f_rx_ip_cksum_good;
extern const uint64_t ferry_mbuf_f_rx_outer_ip_cksum_bad;
extern const uint32_t ferry_ptype_tunnel_mask;
extern const uint32_t ferry_eth_mq_rx_rss;
extern const uint32_t ferry_ring_f_sp_enq;
extern const uint32_t ferry_ring_f_sc_deq;
extern const uint16_t ferry_pktmbuf_headroom_default;
#endif
