//! Ferry's dataplane: packet views, tables, the worker loop and the thin safe
//! wrapper over DPDK. Only `dpdk` may use `unsafe`.
#![deny(unsafe_code)]

pub mod buf;
pub mod counters;
#[allow(unsafe_code)]
pub mod dpdk;
pub mod fastpath;
pub mod lpm;
pub mod router;
pub mod snapshot;
pub mod tables;
pub mod wire;
pub mod worker;
