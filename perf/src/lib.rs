//! Benchmarks and the packet generator (see perf/README.md).
