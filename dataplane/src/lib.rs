//! Ferry's dataplane: packet views, tables, the worker loop and the thin safe
//! wrapper over DPDK. Only `dpdk` may use `unsafe`.

pub mod buf;
pub mod dpdk;
pub mod snapshot;
// pub mod lpm;
// pub mod wire;
