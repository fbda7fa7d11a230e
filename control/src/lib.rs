//! Control side: the configuration model, its validation, the snapshot compiler, the
//! neighbour cache and `ferryd`'s runtime (EAL, ports, workers, the control loop).
#![forbid(unsafe_code)]

pub mod afpacket;
pub mod agent;
pub mod compile;
pub mod config;
pub mod controller;
pub mod health;
pub mod nat;
pub mod neighbor;
pub mod runtime;
pub mod service;
pub mod svcplan;
pub mod views;
