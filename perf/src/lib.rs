//! Benchmarks and the packet generator (see perf/README.md).

pub mod rte_lpm;
