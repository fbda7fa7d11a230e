//! Per-worker counters.
//!
//! Each worker owns one [`WorkerCounters`]; only that worker writes it, with a plain load
//! and store (Relaxed atomics compile to ordinary `mov`s on x86: no locked instruction on
//! the hot path). The control side reads them at any time and sums across workers.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::WireError;

/// A counter written by one thread only.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning worker may call this (load + store, not an atomic RMW).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where in the packet a parse failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Ethernet,
    Arp,
    Ipv4,
    Ipv6,
    Icmp,
}

impl Layer {
    pub const ALL: [Layer; 5] = [
        Layer::Ethernet,
        Layer::Arp,
        Layer::Ipv4,
        Layer::Ipv6,
        Layer::Icmp,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Ethernet => "eth",
            Layer::Arp => "arp",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Icmp => "icmp",
        }
    }
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Failed to parse at a layer.
    Malformed(Layer, WireError),
    /// Unicast to a MAC that is not the port's.
    NotForUs,
    /// VLAN tag absent, present or different from the port's.
    VlanMismatch,
    UnknownEthertype,
    /// Source address that may not appear on the wire (multicast, loopback, ...).
    Martian,
    /// Multicast, broadcast or link-local destination Ferry does not route.
    NotRouted,
    NoRoute,
    TtlExceeded,
    /// Held while its neighbour was resolved, and the neighbour did not answer in time
    /// (an ICMP host / address unreachable went back, if the rate limit allowed).
    NeighborUnresolved,
    /// To a neighbour whose resolution failed (negatively cached): dropped at once, not
    /// held, with an ICMP host / address unreachable if the rate limit allows.
    NeighborFailed,
    /// The hold queue had no room: the worker's is full, or the packet's neighbour already
    /// holds its share (`tuning.unres_qlen` packets / `tuning.unres_qlen_bytes`; the
    /// oldest of that neighbour's packets is dropped).
    HoldQueueFull,
    /// Bigger than the egress MTU (an ICMP error was sent if allowed).
    TooBig,
    /// For the node itself, but the port has no kernel interface.
    LocalNoKernel,
    /// Chained mbuf (Ferry handles single-segment packets only).
    MultiSegment,
    /// The tx queue did not take the packet.
    TxFull,
    /// No mbuf for a packet Ferry wanted to originate.
    NoMbuf,
    /// ICMP error suppressed by the rate limit.
    IcmpRateLimited,
    /// Cut short by the receiving port: longer than the port's MTU allows (a datagram the
    /// kernel reassembled under af_packet) and shorter than its IP header says.
    Truncated,
    /// NAT: a new flow, and the worker's flow (or mapping) table is full.
    NatTableFull,
    /// NAT: a new flow, and no pool port of this worker's share is free.
    NatPortsExhausted,
    /// NAT: a new flow whose reply tuple another flow already has.
    NatClash,
    /// NAT: a later fragment of a translated flow with no first fragment seen (or a
    /// fragment the NAT cannot match to its flow).
    NatFragment,
    /// NAT: the ring to the flow's owner worker was full.
    HandoffFull,
    /// NAT: a packet the translation could not rewrite (short, or a protocol it does not
    /// translate).
    NatUntranslatable,
    /// A service's new flow found no backend up (answered with ICMP port unreachable).
    SvcNoBackend,
}

const SIMPLE: [DropReason; 24] = [
    DropReason::NotForUs,
    DropReason::VlanMismatch,
    DropReason::UnknownEthertype,
    DropReason::Martian,
    DropReason::NotRouted,
    DropReason::NoRoute,
    DropReason::TtlExceeded,
    DropReason::NeighborUnresolved,
    DropReason::NeighborFailed,
    DropReason::HoldQueueFull,
    DropReason::TooBig,
    DropReason::LocalNoKernel,
    DropReason::MultiSegment,
    DropReason::TxFull,
    DropReason::NoMbuf,
    DropReason::IcmpRateLimited,
    DropReason::Truncated,
    DropReason::NatTableFull,
    DropReason::NatPortsExhausted,
    DropReason::NatClash,
    DropReason::NatFragment,
    DropReason::HandoffFull,
    DropReason::NatUntranslatable,
    DropReason::SvcNoBackend,
];

impl DropReason {
    /// Number of distinct counters.
    pub const COUNT: usize = Layer::ALL.len() * WireError::COUNT + SIMPLE.len();

    #[inline]
    pub fn index(self) -> usize {
        match self {
            DropReason::Malformed(l, e) => l as usize * WireError::COUNT + e.index(),
            other => {
                Layer::ALL.len() * WireError::COUNT
                    + SIMPLE.iter().position(|s| *s == other).unwrap_or(0)
            }
        }
    }

    /// The reason at counter index `i`.
    pub fn from_index(i: usize) -> Option<DropReason> {
        let m = Layer::ALL.len() * WireError::COUNT;
        if i < m {
            Some(DropReason::Malformed(
                Layer::ALL[i / WireError::COUNT],
                WireError::ALL[i % WireError::COUNT],
            ))
        } else {
            SIMPLE.get(i - m).copied()
        }
    }

    /// snake_case label, e.g. `ipv4_bad_checksum`, `no_route`.
    pub fn label(self) -> String {
        match self {
            DropReason::Malformed(l, e) => format!("{}_{}", l.as_str(), e.as_str()),
            DropReason::NotForUs => "not_for_us".into(),
            DropReason::VlanMismatch => "vlan_mismatch".into(),
            DropReason::UnknownEthertype => "unknown_ethertype".into(),
            DropReason::Martian => "martian".into(),
            DropReason::NotRouted => "not_routed".into(),
            DropReason::NoRoute => "no_route".into(),
            DropReason::TtlExceeded => "ttl_exceeded".into(),
            DropReason::NeighborUnresolved => "neighbor_unresolved".into(),
            DropReason::NeighborFailed => "neighbor_failed".into(),
            DropReason::HoldQueueFull => "hold_queue_full".into(),
            DropReason::TooBig => "too_big".into(),
            DropReason::LocalNoKernel => "local_no_kernel".into(),
            DropReason::MultiSegment => "multi_segment".into(),
            DropReason::TxFull => "tx_full".into(),
            DropReason::NoMbuf => "no_mbuf".into(),
            DropReason::IcmpRateLimited => "icmp_rate_limited".into(),
            DropReason::Truncated => "truncated".into(),
            DropReason::NatTableFull => "nat_table_full".into(),
            DropReason::NatPortsExhausted => "nat_ports_exhausted".into(),
            DropReason::NatClash => "nat_clash".into(),
            DropReason::NatFragment => "nat_fragment".into(),
            DropReason::HandoffFull => "handoff_full".into(),
            DropReason::NatUntranslatable => "nat_untranslatable".into(),
            DropReason::SvcNoBackend => "svc_no_backend".into(),
        }
    }
}

/// One worker's counters. Cache-line aligned so workers do not share lines.
#[repr(align(64))]
#[derive(Debug)]
pub struct WorkerCounters {
    pub rx: Counter,
    pub tx: Counter,
    pub to_kernel: Counter,
    pub from_kernel: Counter,
    /// ARP replies and NAs sent for our addresses, echo replies, ICMP errors.
    pub arp_replies: Counter,
    pub nd_adverts: Counter,
    pub echo_replies: Counter,
    pub icmp_errors: Counter,
    pub solicits: Counter,
    /// Events for the control side (neighbours learned, neighbours to resolve) lost to a
    /// full ring; the next packet reports them again.
    pub events_lost: Counter,
    /// IPv4 datagrams split into fragments for a smaller egress MTU.
    pub fragmented: Counter,
    /// Packets consumed without a drop (ARP for others, NA without kernel, ...).
    pub consumed: Counter,
    /// TSC cycles of the poll rounds that carried packets (from the round's rx calls to the
    /// next round: rx, processing, tx flush), the packets in them, and how many non-empty
    /// bursts (packets per burst says how loaded the worker is: near 32 it is saturated).
    pub busy_cycles: Counter,
    pub busy_packets: Counter,
    pub busy_bursts: Counter,
    /// Snapshot generation this worker runs.
    pub generation: Counter,
    pub drops: [Counter; DropReason::COUNT],
    pub nat: NatCounters,
}

/// The NAT stage's counters (issue 5). Gauges (`flows`, `by_state`) are written by the
/// worker at its housekeeping tick.
#[derive(Debug)]
pub struct NatCounters {
    pub created: Counter,
    pub expired: Counter,
    /// Ended by a rule's deletion or a flush.
    pub removed: Counter,
    /// Packets handed to the worker that owns their flow, and taken from others.
    pub handoffs_out: Counter,
    pub handoffs_in: Counter,
    /// Later fragments translated by their first fragment's flow.
    pub fragments: Counter,
    pub fragments_unmatched: Counter,
    pub flows: Counter,
    /// Flows by state (`conntrack::State` as index).
    pub by_state: [Counter; 8],
    /// Flows created, by rule id.
    pub rule_hits: Box<[Counter]>,
}

/// Rule ids the hit counters cover (`nat::MAX_RULE_IDS`).
pub const RULE_COUNTERS: usize = 1 << 13;

/// State names, by `conntrack::State` index.
pub const STATE_NAMES: [&str; 8] = [
    "syn_sent",
    "syn_recv",
    "established",
    "fin_wait",
    "time_wait",
    "close",
    "unreplied",
    "replied",
];

impl Default for NatCounters {
    fn default() -> Self {
        NatCounters {
            created: Counter::default(),
            expired: Counter::default(),
            removed: Counter::default(),
            handoffs_out: Counter::default(),
            handoffs_in: Counter::default(),
            fragments: Counter::default(),
            fragments_unmatched: Counter::default(),
            flows: Counter::default(),
            by_state: std::array::from_fn(|_| Counter::default()),
            rule_hits: (0..RULE_COUNTERS).map(|_| Counter::default()).collect(),
        }
    }
}

impl NatCounters {
    fn pairs(&self) -> [(&'static str, &Counter); 8] {
        [
            ("nat_flows", &self.flows),
            ("nat_created", &self.created),
            ("nat_expired", &self.expired),
            ("nat_removed", &self.removed),
            ("nat_handoffs_out", &self.handoffs_out),
            ("nat_handoffs_in", &self.handoffs_in),
            ("nat_fragments", &self.fragments),
            ("nat_fragments_unmatched", &self.fragments_unmatched),
        ]
    }
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            rx: Counter::default(),
            tx: Counter::default(),
            to_kernel: Counter::default(),
            from_kernel: Counter::default(),
            arp_replies: Counter::default(),
            nd_adverts: Counter::default(),
            echo_replies: Counter::default(),
            icmp_errors: Counter::default(),
            solicits: Counter::default(),
            events_lost: Counter::default(),
            fragmented: Counter::default(),
            consumed: Counter::default(),
            busy_cycles: Counter::default(),
            busy_packets: Counter::default(),
            busy_bursts: Counter::default(),
            generation: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
            nat: NatCounters::default(),
        }
    }
}

impl WorkerCounters {
    #[inline]
    pub fn drop(&self, r: DropReason) {
        self.drops[r.index()].add(1);
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()].get()
    }

    /// Add another worker's counters into these (for totals on the control side).
    pub fn accumulate(&self, other: &WorkerCounters) {
        let pairs = [
            (&self.rx, &other.rx),
            (&self.tx, &other.tx),
            (&self.to_kernel, &other.to_kernel),
            (&self.from_kernel, &other.from_kernel),
            (&self.arp_replies, &other.arp_replies),
            (&self.nd_adverts, &other.nd_adverts),
            (&self.echo_replies, &other.echo_replies),
            (&self.icmp_errors, &other.icmp_errors),
            (&self.solicits, &other.solicits),
            (&self.events_lost, &other.events_lost),
            (&self.fragmented, &other.fragmented),
            (&self.consumed, &other.consumed),
            (&self.busy_cycles, &other.busy_cycles),
            (&self.busy_packets, &other.busy_packets),
            (&self.busy_bursts, &other.busy_bursts),
        ];
        for (a, b) in pairs {
            a.add(b.get());
        }
        for (a, b) in self.drops.iter().zip(other.drops.iter()) {
            a.add(b.get());
        }
        for ((_, a), (_, b)) in self.nat.pairs().into_iter().zip(other.nat.pairs()) {
            a.add(b.get());
        }
        for (a, b) in self.nat.by_state.iter().zip(other.nat.by_state.iter()) {
            a.add(b.get());
        }
        for (a, b) in self.nat.rule_hits.iter().zip(other.nat.rule_hits.iter()) {
            a.add(b.get());
        }
    }

    /// Named values, for printing and the stats file.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = [
            ("rx", &self.rx),
            ("tx", &self.tx),
            ("to_kernel", &self.to_kernel),
            ("from_kernel", &self.from_kernel),
            ("arp_replies", &self.arp_replies),
            ("nd_adverts", &self.nd_adverts),
            ("echo_replies", &self.echo_replies),
            ("icmp_errors", &self.icmp_errors),
            ("solicits", &self.solicits),
            ("events_lost", &self.events_lost),
            ("fragmented", &self.fragmented),
            ("consumed", &self.consumed),
            ("busy_cycles", &self.busy_cycles),
            ("busy_packets", &self.busy_packets),
            ("busy_bursts", &self.busy_bursts),
        ]
        .iter()
        .map(|(k, c)| (k.to_string(), c.get()))
        .collect();
        for (i, c) in self.drops.iter().enumerate() {
            if let Some(r) = DropReason::from_index(i) {
                v.push((format!("drop_{}", r.label()), c.get()));
            }
        }
        for (k, c) in self.nat.pairs() {
            v.push((k.to_string(), c.get()));
        }
        for (k, c) in STATE_NAMES.iter().zip(self.nat.by_state.iter()) {
            v.push((format!("nat_flows_{k}"), c.get()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_indexes_are_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..DropReason::COUNT {
            let r = DropReason::from_index(i).unwrap();
            assert_eq!(r.index(), i, "{r:?}");
            assert!(seen.insert(r.label()), "label {} twice", r.label());
        }
        assert!(DropReason::from_index(DropReason::COUNT).is_none());
        assert_eq!(
            DropReason::Malformed(Layer::Ipv4, WireError::BadChecksum).label(),
            "ipv4_bad_checksum"
        );
    }

    #[test]
    fn counters_add() {
        let c = WorkerCounters::default();
        c.rx.add(3);
        c.rx.add(4);
        c.drop(DropReason::NoRoute);
        assert_eq!(c.rx.get(), 7);
        assert_eq!(c.dropped(DropReason::NoRoute), 1);
        assert!(c
            .named()
            .iter()
            .any(|(k, v)| k == "drop_no_route" && *v == 1));
    }
}
