//! Ferry's dataplane: packet views, tables, the router, the fast path and the worker loop.
//! No `unsafe`: DPDK is reached through the safe wrapper crate `ferry-dpdk` (re-exported
//! as [`dpdk`]).
#![forbid(unsafe_code)]

pub use ferry_dpdk as dpdk;

pub mod buf;
pub mod conntrack;
pub mod counters;
pub mod fastpath;
pub mod lb;
pub mod lpm;
pub mod nat;
pub mod router;
pub mod rss;
pub mod service;
pub mod snapshot;
pub mod tables;
pub mod translate;
pub mod wire;
pub mod worker;
