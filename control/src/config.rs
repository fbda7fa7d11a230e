//! The configuration model, one for the YAML file and the gRPC API: both parse into the raw
//! serde types ([`RawConfig`]), and [`Config::validate`] turns them into a checked
//! [`Config`] or errors naming the field and the value. Deltas ([`Change`]) are checked
//! against the running [`Config`] with the same rules ([`Config::with_changes`]), and
//! [`Config::to_raw`] gives the running state back in the file's schema. Nothing is applied
//! before the whole result is valid.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A validation error: the field path (`routes[1].via[0]`), the value given (where one
/// value is at fault) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub value: String,
    pub message: String,
}

impl ConfigError {
    /// The resource the field belongs to: `routes[3]` of `routes[3].via[0]`.
    pub fn resource(&self) -> &str {
        match self.field.find(']') {
            Some(i) => &self.field[..=i],
            None => self.field.split('.').next().unwrap_or(&self.field),
        }
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        value: String::new(),
        message: message.into(),
    }
}

/// An error about one value: `value` is what was given.
fn err_v(field: impl Into<String>, value: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        value: value.to_string(),
        message: message.into(),
    }
}

/// Limits on the model (documented in `proto/ferry/v1/ferry.proto`): going over one is an
/// error naming the field, never an out-of-memory.
pub const MAX_ROUTES: usize = 4 << 20;
pub const MAX_NEIGHBORS: usize = 65_536;
pub const MAX_ADDRESSES: usize = 256;
pub const MAX_PORTS: usize = 16;
pub const MAX_ARGS: usize = 64;
pub const MAX_CHANGES: usize = 1 << 20;
/// At most this many errors are reported for one request (the first ones).
pub const MAX_ERRORS: usize = 100;

/// An IP prefix: address and length, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn max_len(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                ferry_dataplane::tables::same_prefix32(a.into(), b.into(), self.len)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                ferry_dataplane::tables::same_prefix128(a.into(), b.into(), self.len)
            }
            _ => false,
        }
    }

    /// The same prefix with host bits cleared.
    pub fn network(&self) -> Prefix {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.len as u32)
                };
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.len as u32)
                };
                IpAddr::V6((u128::from(a) & m).into())
            }
        };
        Prefix {
            addr,
            len: self.len,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Prefix { addr, len })
    }
}

pub type Mac = [u8; 6];

pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

// ---- raw, as written in YAML ----

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub dpdk: RawDpdk,
    pub ports: Vec<RawPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbors: Vec<RawNeighbor>,
    #[serde(default)]
    pub tuning: RawTuning,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<crate::nat::RawNat>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<crate::service::RawService>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpdk {
    /// Lcore ids; "L@C" runs lcore L on CPU C (several lcores may share a CPU in tests).
    pub lcores: Vec<RawLcore>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Mbufs in the packet pool (default 16384 per worker, at least 8191).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbufs: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawLcore {
    Id(u32),
    Mapped(String),
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub name: String,
    pub devargs: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u32>,
    /// Give the port a kernel interface (TAP) for traffic to the node itself. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: String,
    pub via: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNeighbor {
    pub address: String,
    pub mac: String,
    pub port: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTuning {
    /// Seconds a learned neighbour stays reachable before it is probed (default 30).
    pub neighbor_reachable_s: Option<u64>,
    /// Seconds a stale neighbour is kept while probing before it is removed (default 10).
    pub neighbor_stale_s: Option<u64>,
    /// ICMP errors per second per worker (default 1000).
    pub icmp_rate: Option<u32>,
    /// Descriptors per rx / tx queue (default 1024).
    pub rx_desc: Option<u16>,
    pub tx_desc: Option<u16>,
    /// Milliseconds between solicitations of an unresolved neighbour (default 1000).
    pub neighbor_retrans_ms: Option<u64>,
    /// Solicitations before an unresolved neighbour fails, and unanswered probes before a
    /// stale one is removed (default 3).
    pub neighbor_probes: Option<u32>,
    /// Seconds a failed neighbour stays failed: packets to it are dropped at once with an
    /// ICMP unreachable (default 5).
    pub neighbor_failed_s: Option<u64>,
    /// ARP requests / neighbour solicitations per port per second, in all (default 1000).
    pub solicit_rate: Option<u32>,
    /// Packets a worker holds while their neighbours are resolved (default 256).
    pub hold_packets: Option<usize>,
    /// Packets and bytes one unresolved neighbour may hold per worker (defaults 64 and
    /// 65536; as Linux's unres_qlen / unres_qlen_bytes): its oldest is dropped past either.
    pub unres_qlen: Option<usize>,
    pub unres_qlen_bytes: Option<usize>,
}

// ---- validated ----

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub dpdk: DpdkConfig,
    pub ports: Vec<PortConfig>,
    /// Prefix to next hops (one, or an ECMP group).
    pub routes: BTreeMap<Prefix, Vec<IpAddr>>,
    pub neighbors: Vec<StaticNeighbor>,
    pub tuning: Tuning,
    pub nat: crate::nat::NatConfig,
    pub services: Vec<crate::service::Service>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpdkConfig {
    pub lcores: Vec<u32>,
    /// CPU each lcore runs on, if mapped ("L@C"); None: the CPU with the lcore's id.
    pub cpus: Vec<Option<u32>>,
    pub args: Vec<String>,
    pub mbufs: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub name: String,
    pub devargs: String,
    /// The device name DPDK gives the port (devargs up to the first comma).
    pub device: String,
    pub addresses: Vec<Prefix>,
    pub mtu: u16,
    pub vlan: Option<u16>,
    pub exception: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticNeighbor {
    pub address: IpAddr,
    pub mac: Mac,
    pub port: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub neighbor_reachable_s: u64,
    pub neighbor_stale_s: u64,
    pub icmp_rate: u32,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub neighbor_retrans_ms: u64,
    pub neighbor_probes: u32,
    pub neighbor_failed_s: u64,
    pub solicit_rate: u32,
    pub hold_packets: usize,
    pub unres_qlen: usize,
    pub unres_qlen_bytes: usize,
}

impl Config {
    /// Parse and validate YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "document".into());
            err(at, e.to_string())
        })?;
        Config::validate(raw)
    }

    /// Check everything; the first problem found is returned, naming field and value.
    pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
        Config::validate_all(raw).map_err(|mut e| e.swap_remove(0))
    }

    /// Check everything. Errors in the dpdk, ports and tuning sections stop the check at
    /// the first; routes and neighbours are each checked, and every bad one is reported
    /// (up to [`MAX_ERRORS`]).
    pub fn validate_all(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
        let (dpdk, ports, tuning) = Config::validate_base(&raw).map_err(|e| vec![e])?;
        let mut cfg = Config {
            dpdk,
            ports,
            routes: BTreeMap::new(),
            neighbors: Vec::new(),
            tuning,
            nat: Default::default(),
            services: Vec::new(),
        };
        let mut errors = Vec::new();
        let note = |errors: &mut Vec<ConfigError>, e: ConfigError| {
            if errors.len() < MAX_ERRORS {
                errors.push(e)
            }
        };
        if raw.routes.len() > MAX_ROUTES {
            note(
                &mut errors,
                err(
                    "routes",
                    format!("{} routes: at most {MAX_ROUTES}", raw.routes.len()),
                ),
            );
        }
        if raw.neighbors.len() > MAX_NEIGHBORS {
            note(
                &mut errors,
                err(
                    "neighbors",
                    format!("{} neighbors: at most {MAX_NEIGHBORS}", raw.neighbors.len()),
                ),
            );
        }
        if errors.is_empty() {
            let owners = cfg.owners();
            // Checked into a vector, sorted (duplicates side by side), then bulk-built into
            // the map: a million inserts one by one took twice as long. Paths are made only
            // for errors.
            let mut routes: Vec<(Prefix, Vec<IpAddr>, usize)> =
                Vec::with_capacity(raw.routes.len());
            for (i, r) in raw.routes.iter().enumerate() {
                match cfg.check_route(r, &|| format!("routes[{i}]"), &owners) {
                    Ok((prefix, via)) => routes.push((prefix, via, i)),
                    Err(e) => note(&mut errors, e),
                }
            }
            routes.sort_unstable_by_key(|r| (r.0, r.2));
            for w in routes.windows(2) {
                if w[0].0 == w[1].0 {
                    let (o, i) = (w[0].2, w[1].2);
                    note(
                        &mut errors,
                        err_v(
                            format!("routes[{i}].prefix"),
                            &raw.routes[i].prefix,
                            format!("{} is already routed by routes[{o}]", w[1].0),
                        ),
                    );
                }
            }
            if errors.is_empty() {
                cfg.routes = routes.into_iter().map(|(p, via, _)| (p, via)).collect();
            }
            for (i, n) in raw.neighbors.iter().enumerate() {
                let at = format!("neighbors[{i}]");
                match cfg.check_neighbor(n, &at) {
                    Ok(sn) => cfg.neighbors.push(sn),
                    Err(e) => note(&mut errors, e),
                }
            }
        }
        match crate::nat::validate(
            raw.nat.as_ref(),
            &cfg.ports,
            MAX_ERRORS - errors.len().min(MAX_ERRORS),
        ) {
            Ok(nat) => cfg.nat = nat,
            Err(e) => errors.extend(e),
        }
        match crate::service::validate(
            &raw.services,
            &cfg.ports,
            MAX_ERRORS - errors.len().min(MAX_ERRORS),
        ) {
            Ok(s) => cfg.services = s,
            Err(e) => errors.extend(e),
        }
        errors.extend(cfg.service_overlaps());
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    /// Each address of this node, with its port.
    fn owners(&self) -> HashMap<IpAddr, usize> {
        let mut owners = HashMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            for a in &p.addresses {
                owners.insert(a.addr, i);
            }
        }
        owners
    }

    /// Check one route against the ports (`at` makes its path, e.g. `routes[3]`).
    fn check_route(
        &self,
        r: &RawRoute,
        at: &dyn Fn() -> String,
        owners: &HashMap<IpAddr, usize>,
    ) -> Result<(Prefix, Vec<IpAddr>), ConfigError> {
        let prefix = self.check_prefix(&r.prefix, &|| format!("{}.prefix", at()))?;
        if r.via.is_empty() {
            return Err(err(
                format!("{}.via", at()),
                "at least one next hop is needed",
            ));
        }
        if r.via.len() > 64 {
            return Err(err(
                format!("{}.via", at()),
                format!("{} next hops: at most 64 in an ECMP group", r.via.len()),
            ));
        }
        let mut via = Vec::with_capacity(r.via.len());
        for (j, v) in r.via.iter().enumerate() {
            let f = || format!("{}.via[{j}]", at());
            let ip: IpAddr = v
                .trim()
                .parse()
                .map_err(|_| err_v(f(), v, format!("{v:?} is not an IP address")))?;
            if ip.is_ipv4() != prefix.addr.is_ipv4() {
                return Err(err_v(
                    f(),
                    v,
                    format!("{ip} is not of the same family as {prefix}"),
                ));
            }
            if connected_port(&self.ports, ip).is_none() {
                return Err(err_v(
                    f(),
                    v,
                    format!("{ip} is not on a connected subnet of any port"),
                ));
            }
            if owners.contains_key(&ip) {
                return Err(err_v(
                    f(),
                    v,
                    format!("{ip} is one of this node's own addresses"),
                ));
            }
            if via.contains(&ip) {
                return Err(err_v(f(), v, format!("{ip} is listed twice")));
            }
            via.push(ip);
        }
        Ok((prefix, via))
    }

    /// A route's prefix: parsed, host bits zero.
    fn check_prefix(&self, text: &str, f: &dyn Fn() -> String) -> Result<Prefix, ConfigError> {
        let prefix: Prefix = text.parse().map_err(|m: String| err_v(f(), text, m))?;
        if prefix.network() != prefix {
            return Err(err_v(
                f(),
                text,
                format!(
                    "{text:?} has host bits set (did you mean {}?)",
                    prefix.network()
                ),
            ));
        }
        Ok(prefix)
    }

    fn port_index(&self, name: &str, f: &str) -> Result<usize, ConfigError> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| err_v(f, name, format!("{name:?} is not the name of a port")))
    }

    /// Check one static neighbour (`at`: its path, e.g. `neighbors[0]`).
    fn check_neighbor(&self, n: &RawNeighbor, at: &str) -> Result<StaticNeighbor, ConfigError> {
        let f = format!("{at}.address");
        let address: IpAddr = n.address.trim().parse().map_err(|_| {
            err_v(
                &f,
                &n.address,
                format!("{:?} is not an IP address", n.address),
            )
        })?;
        let fm = format!("{at}.mac");
        let mac = parse_mac(&n.mac).ok_or_else(|| {
            err_v(
                &fm,
                &n.mac,
                format!("{:?} is not a MAC address like 02:00:00:00:00:09", n.mac),
            )
        })?;
        if mac[0] & 1 == 1 {
            return Err(err_v(
                &fm,
                &n.mac,
                format!("{:?} is a multicast MAC", n.mac),
            ));
        }
        let port = self.port_index(&n.port, &format!("{at}.port"))?;
        if !self.ports[port]
            .addresses
            .iter()
            .any(|p| p.contains(address))
            && !(matches!(address, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80))
        {
            return Err(err_v(
                &f,
                &n.address,
                format!("{address} is not on a subnet of port {:?}", n.port),
            ));
        }
        Ok(StaticNeighbor { address, mac, port })
    }

    /// The dpdk, ports and tuning sections, checked.
    fn validate_base(
        raw: &RawConfig,
    ) -> Result<(DpdkConfig, Vec<PortConfig>, Tuning), ConfigError> {
        // dpdk
        if raw.dpdk.lcores.len() < 2 {
            return Err(err(
                "dpdk.lcores",
                format!(
                    "{} given: need the main lcore and at least one worker lcore",
                    raw.dpdk.lcores.len()
                ),
            ));
        }
        let mut lcores = Vec::new();
        let mut cpus = Vec::new();
        for (i, l) in raw.dpdk.lcores.iter().enumerate() {
            let f = format!("dpdk.lcores[{i}]");
            let (id, cpu) = match l {
                RawLcore::Id(id) => (*id, None),
                RawLcore::Mapped(s) => {
                    let parsed = s
                        .split_once('@')
                        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
                    match parsed {
                        Some((a, b)) => (a, Some(b)),
                        None => {
                            return Err(err(
                                f,
                                format!("{s:?}: an lcore id, or \"L@C\" for lcore L on CPU C"),
                            ))
                        }
                    }
                }
            };
            if id >= 128 || cpu.is_some_and(|c| c >= 1024) {
                return Err(err(f, format!("{l:?}: lcore ids are 0..127, CPUs 0..1023")));
            }
            if lcores.contains(&id) {
                return Err(err(f, format!("lcore {id} is listed twice")));
            }
            lcores.push(id);
            cpus.push(cpu);
        }
        for (i, a) in raw.dpdk.args.iter().enumerate() {
            for reserved in ["-l", "--lcores", "--main-lcore", "--vdev", "-a", "--allow"] {
                if a == reserved || a.starts_with(&format!("{reserved}=")) {
                    return Err(err(
                        format!("dpdk.args[{i}]"),
                        format!("{a:?}: ferryd sets this itself from dpdk.lcores and ports"),
                    ));
                }
            }
        }
        let workers = raw.dpdk.lcores.len() as u32 - 1;
        let mbufs = raw.dpdk.mbufs.unwrap_or(8192 + 8192 * workers);
        if !(1024..=4_000_000).contains(&mbufs) {
            return Err(err(
                "dpdk.mbufs",
                format!("{mbufs}: must be 1024..=4000000"),
            ));
        }

        // ports
        if raw.ports.is_empty() {
            return Err(err("ports", "at least one port is needed"));
        }
        if raw.ports.len() > MAX_PORTS {
            return Err(err(
                "ports",
                format!(
                    "{} ports: at most {MAX_PORTS} (each takes two of DPDK's 32 ports: the port and its kernel interface)",
                    raw.ports.len()
                ),
            ));
        }
        if raw.dpdk.args.len() > MAX_ARGS {
            return Err(err(
                "dpdk.args",
                format!("{} arguments: at most {MAX_ARGS}", raw.dpdk.args.len()),
            ));
        }
        let mut ports = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut devices = HashMap::new();
        for (i, p) in raw.ports.iter().enumerate() {
            let f = |k: &str| format!("ports[{i}].{k}");
            if p.name.is_empty()
                || p.name.len() > 12
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(
                    f("name"),
                    format!(
                        "{:?}: 1-12 characters of [A-Za-z0-9_-] (it names the kernel interface fx-<name>)",
                        p.name
                    ),
                ));
            }
            if names.insert(p.name.clone(), i).is_some() {
                return Err(err(
                    f("name"),
                    format!("{:?} is used by another port", p.name),
                ));
            }
            let device = p.devargs.split(',').next().unwrap_or("").trim().to_string();
            if device.is_empty() {
                return Err(err(
                    f("devargs"),
                    format!("{:?}: empty device name", p.devargs),
                ));
            }
            if devices.insert(device.clone(), i).is_some() {
                return Err(err(
                    f("devargs"),
                    format!("{device:?} is used by another port"),
                ));
            }
            if p.addresses.len() > MAX_ADDRESSES {
                return Err(err(
                    f("addresses"),
                    format!("{} addresses: at most {MAX_ADDRESSES}", p.addresses.len()),
                ));
            }
            let mut addresses = Vec::new();
            for (j, a) in p.addresses.iter().enumerate() {
                let pf: Prefix = a
                    .parse()
                    .map_err(|m: String| err(format!("ports[{i}].addresses[{j}]"), m))?;
                if pf.addr.is_unspecified() || pf.addr.is_multicast() || pf.addr.is_loopback() {
                    return Err(err(
                        format!("ports[{i}].addresses[{j}]"),
                        format!("{a:?} is not a unicast host address"),
                    ));
                }
                addresses.push(pf);
            }
            let mtu = p.mtu.unwrap_or(1500);
            if !(576..=9000).contains(&mtu) {
                return Err(err(f("mtu"), format!("{mtu}: must be 576..=9000")));
            }
            if let Some(v) = p.vlan {
                if !(1..=4094).contains(&v) {
                    return Err(err(f("vlan"), format!("{v}: VLAN ids are 1..=4094")));
                }
            }
            ports.push(PortConfig {
                name: p.name.clone(),
                devargs: p.devargs.clone(),
                device,
                addresses,
                mtu: mtu as u16,
                vlan: p.vlan.map(|v| v as u16),
                exception: p.exception.unwrap_or(true),
            });
        }
        // An address may be on one port only.
        let mut owners: HashMap<IpAddr, usize> = HashMap::new();
        for (i, p) in ports.iter().enumerate() {
            for (j, a) in p.addresses.iter().enumerate() {
                if let Some(o) = owners.insert(a.addr, i) {
                    return Err(err(
                        format!("ports[{i}].addresses[{j}]"),
                        format!("{} is already on port {:?}", a.addr, ports[o].name),
                    ));
                }
            }
        }

        let t = &raw.tuning;
        let tuning = Tuning {
            neighbor_reachable_s: t.neighbor_reachable_s.unwrap_or(30),
            neighbor_stale_s: t.neighbor_stale_s.unwrap_or(10),
            icmp_rate: t.icmp_rate.unwrap_or(1000),
            rx_desc: t.rx_desc.unwrap_or(1024),
            tx_desc: t.tx_desc.unwrap_or(1024),
            neighbor_retrans_ms: t.neighbor_retrans_ms.unwrap_or(1000),
            neighbor_probes: t.neighbor_probes.unwrap_or(3),
            neighbor_failed_s: t.neighbor_failed_s.unwrap_or(5),
            solicit_rate: t.solicit_rate.unwrap_or(1000),
            hold_packets: t.hold_packets.unwrap_or(256),
            unres_qlen: t.unres_qlen.unwrap_or(64),
            unres_qlen_bytes: t.unres_qlen_bytes.unwrap_or(65536),
        };
        if tuning.neighbor_reachable_s == 0 {
            return Err(err("tuning.neighbor_reachable_s", "0: must be at least 1"));
        }
        let ranges: [(&str, u64, std::ops::RangeInclusive<u64>); 7] = [
            (
                "tuning.neighbor_retrans_ms",
                tuning.neighbor_retrans_ms,
                10..=60_000,
            ),
            (
                "tuning.neighbor_probes",
                tuning.neighbor_probes as u64,
                1..=100,
            ),
            (
                "tuning.neighbor_failed_s",
                tuning.neighbor_failed_s,
                0..=3600,
            ),
            (
                // (a 50 ms burst of the cap fits a worker's command ring)
                "tuning.solicit_rate",
                tuning.solicit_rate as u64,
                1..=20_000,
            ),
            ("tuning.hold_packets", tuning.hold_packets as u64, 1..=4096),
            ("tuning.unres_qlen", tuning.unres_qlen as u64, 1..=65_536),
            (
                "tuning.unres_qlen_bytes",
                tuning.unres_qlen_bytes as u64,
                64..=(64 << 20),
            ),
        ];
        for (k, v, range) in ranges {
            if !range.contains(&v) {
                return Err(err(
                    k,
                    format!("{v}: must be in {}..={}", range.start(), range.end()),
                ));
            }
        }
        // Held packets keep their mbufs: every worker's hold queue full must leave at
        // least half of the pool for receiving.
        let held = tuning.hold_packets as u64 * workers as u64;
        if held > mbufs as u64 / 2 {
            return Err(err(
                "tuning.hold_packets",
                format!(
                    "{} x {workers} workers = {held} held mbufs: more than half of dpdk.mbufs ({mbufs})",
                    tuning.hold_packets
                ),
            ));
        }
        for (k, v) in [
            ("tuning.rx_desc", tuning.rx_desc),
            ("tuning.tx_desc", tuning.tx_desc),
        ] {
            if !(64..=8192).contains(&v) || !v.is_power_of_two() {
                return Err(err(k, format!("{v}: a power of two in 64..=8192")));
            }
        }

        let dpdk = DpdkConfig {
            lcores,
            cpus,
            args: raw.dpdk.args.clone(),
            mbufs,
        };
        Ok((dpdk, ports, tuning))
    }

    /// The running state in the file's schema: re-applying it changes nothing. Tuning and
    /// defaults are written out in full.
    pub fn to_raw(&self) -> RawConfig {
        let d = &self.dpdk;
        let t = &self.tuning;
        RawConfig {
            dpdk: RawDpdk {
                lcores: d
                    .lcores
                    .iter()
                    .zip(&d.cpus)
                    .map(|(l, c)| match c {
                        Some(c) => RawLcore::Mapped(format!("{l}@{c}")),
                        None => RawLcore::Id(*l),
                    })
                    .collect(),
                args: d.args.clone(),
                mbufs: Some(d.mbufs),
            },
            ports: self
                .ports
                .iter()
                .map(|p| RawPort {
                    name: p.name.clone(),
                    devargs: p.devargs.clone(),
                    addresses: p.addresses.iter().map(|a| a.to_string()).collect(),
                    mtu: Some(p.mtu as u32),
                    vlan: p.vlan.map(|v| v as u32),
                    exception: Some(p.exception),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|(p, via)| RawRoute {
                    prefix: p.to_string(),
                    via: via.iter().map(|v| v.to_string()).collect(),
                })
                .collect(),
            neighbors: self
                .neighbors
                .iter()
                .map(|n| RawNeighbor {
                    address: n.address.to_string(),
                    mac: ferry_dataplane::wire::ethernet::format_mac(&n.mac).to_string(),
                    port: self.ports[n.port].name.clone(),
                })
                .collect(),
            tuning: RawTuning {
                neighbor_reachable_s: Some(t.neighbor_reachable_s),
                neighbor_stale_s: Some(t.neighbor_stale_s),
                icmp_rate: Some(t.icmp_rate),
                rx_desc: Some(t.rx_desc),
                tx_desc: Some(t.tx_desc),
                neighbor_retrans_ms: Some(t.neighbor_retrans_ms),
                neighbor_probes: Some(t.neighbor_probes),
                neighbor_failed_s: Some(t.neighbor_failed_s),
                solicit_rate: Some(t.solicit_rate),
                hold_packets: Some(t.hold_packets),
                unres_qlen: Some(t.unres_qlen),
                unres_qlen_bytes: Some(t.unres_qlen_bytes),
            },
            nat: self.nat.to_raw(&self.ports),
            services: self.services.iter().map(|s| s.to_raw()).collect(),
        }
    }

    /// The running state as YAML in the file's schema.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.to_raw()).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// Routes per family (IPv4, IPv6).
    pub fn route_counts(&self) -> (usize, usize) {
        let v4 = self.routes.keys().filter(|p| p.addr.is_ipv4()).count();
        (v4, self.routes.len() - v4)
    }

    /// One route change checked against this config (`exists`: whether a route with a
    /// prefix is there at this point of the delta): the prefix and its next hops after the
    /// change, None for a delete. `at` is the change's path.
    #[allow(clippy::type_complexity)]
    fn check_route_change(
        &self,
        c: &Change,
        at: &str,
        owners: &HashMap<IpAddr, usize>,
        exists: impl Fn(&Prefix) -> bool,
    ) -> Result<(Prefix, Option<Vec<IpAddr>>), ConfigError> {
        match c {
            Change::UpsertRoute(r) => self
                .check_route(r, &|| at.to_string(), owners)
                .map(|(p, via)| (p, Some(via))),
            Change::DeleteRoute(text) => {
                let p = self.check_prefix(text, &|| at.to_string())?;
                if !exists(&p) {
                    return Err(err_v(at, text, format!("no route for {p}")));
                }
                Ok((p, None))
            }
            _ => Err(err(at, "not a route change")),
        }
    }

    /// Whether every change is a route change (the delta takes the incremental path:
    /// [`Config::route_changes`]).
    pub fn routes_only(changes: &[Change]) -> bool {
        changes
            .iter()
            .all(|c| matches!(c, Change::UpsertRoute(_) | Change::DeleteRoute(_)))
    }

    /// The net effect of route-only `changes` on this config, checked by the rules of
    /// [`Config::validate`] without copying the route table: each changed prefix with its
    /// next hops after the delta (None: deleted). Errors as [`Config::with_changes`].
    #[allow(clippy::type_complexity)]
    pub fn route_changes(
        &self,
        changes: &[Change],
    ) -> Result<Vec<(Prefix, Option<Vec<IpAddr>>)>, Vec<ConfigError>> {
        if let Some(e) = too_many_changes(changes.len()) {
            return Err(vec![e]);
        }
        let owners = self.owners();
        let mut overlay: HashMap<Prefix, Option<Vec<IpAddr>>> = HashMap::new();
        let mut order: Vec<Prefix> = Vec::new();
        let mut errors: Vec<ConfigError> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let at = format!("changes[{i}].{}", c.kind());
            let exists = |p: &Prefix| match overlay.get(p) {
                Some(v) => v.is_some(),
                None => self.routes.contains_key(p),
            };
            let r = self
                .check_route_change(c, &at, &owners, exists)
                .map(|(p, v)| {
                    if overlay.insert(p, v).is_none() {
                        order.push(p);
                    }
                });
            if let Err(e) = r {
                if errors.len() < MAX_ERRORS {
                    errors.push(e);
                }
            }
        }
        // (Counting per family walks the table: only when the total could be over.)
        let added = overlay.values().filter(|v| v.is_some()).count();
        if self.routes.len() + added > MAX_ROUTES {
            let (mut v4, mut v6) = self.route_counts();
            for (p, v) in &overlay {
                let delta = v.is_some() as isize - self.routes.contains_key(p) as isize;
                let n = if p.addr.is_ipv4() { &mut v4 } else { &mut v6 };
                *n = n.saturating_add_signed(delta);
            }
            errors.extend(routes_over_limit(v4, v6));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(order
            .into_iter()
            .map(|p| {
                let v = overlay.remove(&p).flatten();
                (p, v)
            })
            .collect())
    }

    /// This config with `changes` applied in order, all checked by the rules of
    /// [`Config::validate`]. Errors name the change (`changes[3].upsert_route.via[0]`);
    /// every bad change is reported (up to [`MAX_ERRORS`]). A change of addresses re-checks
    /// the whole result (routes and neighbours depend on the subnets).
    pub fn with_changes(&self, changes: &[Change]) -> Result<Config, Vec<ConfigError>> {
        if let Some(e) = too_many_changes(changes.len()) {
            return Err(vec![e]);
        }
        let mut cfg = self.clone();
        let mut owners = cfg.owners();
        let mut errors: Vec<ConfigError> = Vec::new();
        let mut addresses_changed = false;
        for (i, c) in changes.iter().enumerate() {
            let at = format!("changes[{i}].{}", c.kind());
            let r = match c {
                Change::UpsertRoute(_) | Change::DeleteRoute(_) => cfg
                    .check_route_change(c, &at, &owners, |p| cfg.routes.contains_key(p))
                    .map(|(p, v)| {
                        match v {
                            Some(via) => cfg.routes.insert(p, via),
                            None => cfg.routes.remove(&p),
                        };
                    }),
                Change::UpsertNeighbor(n) => cfg.check_neighbor(n, &at).and_then(|sn| {
                    let full = cfg.neighbors.len() >= MAX_NEIGHBORS;
                    match cfg
                        .neighbors
                        .iter_mut()
                        .find(|x| x.port == sn.port && x.address == sn.address)
                    {
                        Some(x) => *x = sn,
                        None if full => {
                            return Err(err(
                                "neighbors",
                                format!("at most {MAX_NEIGHBORS} static neighbours"),
                            ))
                        }
                        None => cfg.neighbors.push(sn),
                    }
                    Ok(())
                }),
                Change::DeleteNeighbor(n) => {
                    let f = format!("{at}.address");
                    let port = cfg.port_index(&n.port, &format!("{at}.port"));
                    let ip = n.address.trim().parse::<IpAddr>().map_err(|_| {
                        err_v(
                            &f,
                            &n.address,
                            format!("{:?} is not an IP address", n.address),
                        )
                    });
                    port.and_then(|port| ip.map(|ip| (port, ip)))
                        .and_then(|(port, ip)| {
                            let before = cfg.neighbors.len();
                            cfg.neighbors
                                .retain(|x| !(x.port == port && x.address == ip));
                            if cfg.neighbors.len() == before {
                                Err(err_v(
                                    f,
                                    &n.address,
                                    format!("no static neighbour {ip} on port {:?}", n.port),
                                ))
                            } else {
                                Ok(())
                            }
                        })
                }
                Change::UpsertService(_)
                | Change::DeleteService(_)
                | Change::UpsertBackend { .. }
                | Change::DeleteBackend { .. } => cfg.service_change(c, &at),
                Change::AddAddress { port, address } | Change::DeleteAddress { port, address } => {
                    let add = matches!(c, Change::AddAddress { .. });
                    let f = format!("{at}.address");
                    let r = cfg.port_index(port, &format!("{at}.port")).and_then(|pi| {
                        let pf: Prefix =
                            address.parse().map_err(|m: String| err_v(&f, address, m))?;
                        let list = &mut cfg.ports[pi].addresses;
                        if add {
                            if pf.addr.is_unspecified()
                                || pf.addr.is_multicast()
                                || pf.addr.is_loopback()
                            {
                                return Err(err_v(
                                    &f,
                                    address,
                                    format!("{address:?} is not a unicast host address"),
                                ));
                            }
                            if let Some(o) = owners.get(&pf.addr) {
                                return Err(err_v(
                                    &f,
                                    address,
                                    format!(
                                        "{} is already on port {:?}",
                                        pf.addr,
                                        self.ports.get(*o).map_or("?", |p| &p.name)
                                    ),
                                ));
                            }
                            if list.len() >= MAX_ADDRESSES {
                                return Err(err_v(
                                    &f,
                                    address,
                                    format!("at most {MAX_ADDRESSES} addresses on a port"),
                                ));
                            }
                            list.push(pf);
                        } else {
                            let before = list.len();
                            list.retain(|a| *a != pf);
                            if list.len() == before {
                                return Err(err_v(
                                    &f,
                                    address,
                                    format!("{pf} is not on port {port:?}"),
                                ));
                            }
                        }
                        Ok(())
                    });
                    if r.is_ok() {
                        addresses_changed = true;
                        owners = cfg.owners();
                    }
                    r
                }
            };
            if let Err(e) = r {
                if errors.len() < MAX_ERRORS {
                    errors.push(e);
                }
            }
        }
        let (v4, v6) = cfg.route_counts();
        errors.extend(routes_over_limit(v4, v6));
        if !errors.is_empty() {
            return Err(errors);
        }
        if addresses_changed {
            return Config::validate_all(cfg.to_raw());
        }
        let overlaps = cfg.service_overlaps();
        if !overlaps.is_empty() {
            return Err(overlaps);
        }
        Ok(cfg)
    }

    /// Addresses that two features would both claim: a FullNAT local address that is a
    /// VIP, a VIP or local address inside an SNAT pool or on a DNAT address; and tunnels
    /// with no port to send from.
    fn service_overlaps(&self) -> Vec<ConfigError> {
        use ferry_dataplane::service::Forward;
        let mut errors = Vec::new();
        let total: usize = self.services.iter().map(|s| s.backends.len()).sum();
        if total > ferry_dataplane::service::MAX_BACKENDS {
            errors.push(err(
                "services",
                format!(
                    "{total} backends in all: at most {}",
                    ferry_dataplane::service::MAX_BACKENDS
                ),
            ));
        }
        let vips: HashMap<IpAddr, &str> = self
            .services
            .iter()
            .map(|s| (s.vip, s.name.as_str()))
            .collect();
        for (i, s) in self.services.iter().enumerate() {
            let mut mine: Vec<(String, IpAddr)> = vec![(format!("services[{i}].vip"), s.vip)];
            for (j, l) in s.local_addresses.iter().enumerate() {
                let f = format!("services[{i}].local_addresses[{j}]");
                if let Some(o) = vips.get(l) {
                    let m = format!("{l} is the VIP of service {o:?}");
                    errors.push(err_v(&f, &l.to_string(), m));
                }
                mine.push((f, *l));
            }
            for (f, a) in &mine {
                for r in self
                    .nat
                    .snat
                    .iter()
                    .filter(|r| r.pool.iter().any(|p| p.contains(*a)))
                {
                    let m = format!("{a} is in the pool of SNAT rule {:?}", r.name);
                    errors.push(err_v(f, &a.to_string(), m));
                }
                for r in self.nat.dnat.iter().filter(|r| r.address == *a) {
                    let m = format!("{a} is the address of DNAT rule {:?}", r.name);
                    errors.push(err_v(f, &a.to_string(), m));
                }
            }
            if matches!(s.forward, Forward::Ipip | Forward::Gue) {
                let unreachable = s.backends.iter().enumerate().find(|(_, b)| {
                    crate::svcplan::source_for(self, b.address)
                        .is_none_or(|a| a.is_ipv4() != b.address.is_ipv4())
                });
                if let Some((j, b)) = unreachable {
                    errors.push(err_v(
                        format!("services[{i}].backends[{j}].address"),
                        &b.address.to_string(),
                        "no port has an address of this family towards it (the tunnel's source)",
                    ));
                }
            }
        }
        errors
    }

    /// Apply one service or backend change (checked as the file's services are).
    fn service_change(&mut self, c: &Change, at: &str) -> Result<(), ConfigError> {
        use crate::service as sv;
        let find = |cfg: &Config, name: &str, f: String| {
            cfg.services
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| err_v(f, name, format!("no service named {name:?}")))
        };
        match c {
            Change::UpsertService(r) => {
                let s = sv::check(r, at, &self.ports)?;
                let clash = self.services.iter().position(|o| {
                    o.name != s.name && (o.vip, o.protocol, o.port) == (s.vip, s.protocol, s.port)
                });
                if let Some(o) = clash {
                    return Err(err_v(
                        format!("{at}.vip"),
                        &r.vip,
                        format!("service {:?} already listens there", self.services[o].name),
                    ));
                }
                match self.services.iter().position(|o| o.name == s.name) {
                    Some(i) => self.services[i] = s,
                    None if self.services.len() >= ferry_dataplane::service::MAX_SERVICES - 1 => {
                        return Err(err_v(format!("{at}.name"), &r.name, "too many services"))
                    }
                    None => self.services.push(s),
                }
            }
            Change::DeleteService(name) => {
                let i = find(self, name, at.to_string())?;
                self.services.remove(i);
            }
            Change::UpsertBackend { service, backend } => {
                let i = find(self, service, format!("{at}.service"))?;
                let s = &self.services[i];
                let b = sv::check_backend(
                    backend,
                    &format!("{at}.backend"),
                    s.vip,
                    s.port,
                    s.forward,
                    &self.ports,
                )?;
                let s = &mut self.services[i];
                match s
                    .backends
                    .iter()
                    .position(|o| (o.address, o.port) == (b.address, b.port))
                {
                    Some(j) => s.backends[j] = b,
                    None if s.backends.len() >= sv::MAX_BACKENDS_PER_SERVICE => {
                        return Err(err_v(
                            format!("{at}.backend"),
                            &backend.address,
                            "the service has the most backends it may",
                        ))
                    }
                    None => s.backends.push(b),
                }
            }
            Change::DeleteBackend {
                service,
                address,
                port,
            } => {
                let i = find(self, service, format!("{at}.service"))?;
                let s = &mut self.services[i];
                let ip: IpAddr = address.trim().parse().map_err(|_| {
                    err_v(
                        format!("{at}.address"),
                        address,
                        format!("{address:?} is not an IP address"),
                    )
                })?;
                let port = port.map_or(s.port, |p| p as u16);
                let before = s.backends.len();
                s.backends.retain(|b| (b.address, b.port) != (ip, port));
                if s.backends.len() == before {
                    return Err(err_v(
                        format!("{at}.address"),
                        address,
                        format!("service {service:?} has no backend {ip} port {port}"),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub fn workers(&self) -> usize {
        self.dpdk.lcores.len() - 1
    }

    /// Why this config cannot replace `running` without a restart, if it cannot.
    pub fn reload_blocker(&self, running: &Config) -> Option<ConfigError> {
        if self.dpdk != running.dpdk {
            return Some(err("dpdk", "changes to dpdk need a restart"));
        }
        if self.ports.len() != running.ports.len() {
            return Some(err("ports", "adding or removing ports needs a restart"));
        }
        for (i, (a, b)) in self.ports.iter().zip(&running.ports).enumerate() {
            if a.name != b.name
                || a.devargs != b.devargs
                || a.exception != b.exception
                || a.mtu != b.mtu
            {
                return Some(err(
                    format!("ports[{i}]"),
                    "name, devargs, mtu and exception need a restart (addresses and vlan can change)",
                ));
            }
        }
        if self.nat.max_flows != running.nat.max_flows {
            return Some(err(
                "nat.max_flows",
                "the flow tables are allocated at start: a new size needs a restart",
            ));
        }
        if self.tuning != running.tuning {
            return Some(err(
                "tuning",
                "changes to tuning (timers, rates, queue sizes) need a restart",
            ));
        }
        None
    }
}

/// The error for a delta of `n` changes, if that is over [`MAX_CHANGES`].
fn too_many_changes(n: usize) -> Option<ConfigError> {
    (n > MAX_CHANGES).then(|| {
        err(
            "changes",
            format!("{n} changes: at most {MAX_CHANGES} in one delta"),
        )
    })
}

/// The error for route counts over [`MAX_ROUTES`] in either family, if they are.
fn routes_over_limit(v4: usize, v6: usize) -> Option<ConfigError> {
    (v4.max(v6) > MAX_ROUTES).then(|| {
        err(
            "routes",
            format!("{v4} IPv4 and {v6} IPv6 routes: at most {MAX_ROUTES} per family"),
        )
    })
}

/// One change of a delta (gRPC `Delta`), in the file's value syntax.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Add a route, or replace the next hops of the route with its prefix.
    UpsertRoute(RawRoute),
    /// Remove the route with this prefix.
    DeleteRoute(String),
    /// Add or replace the static neighbour with its port and address.
    UpsertNeighbor(RawNeighbor),
    /// Remove the static neighbour with this port and address (mac is ignored).
    DeleteNeighbor(RawNeighbor),
    AddAddress {
        port: String,
        address: String,
    },
    DeleteAddress {
        port: String,
        address: String,
    },
    /// Add a service, or replace the service with its name (backends and all).
    UpsertService(Box<crate::service::RawService>),
    /// Remove the service with this name.
    DeleteService(String),
    /// Add a backend to a service, or replace the one with its address and port (weight,
    /// drain).
    UpsertBackend {
        service: String,
        backend: crate::service::RawBackend,
    },
    /// Remove a service's backend (its port left out: the service's).
    DeleteBackend {
        service: String,
        address: String,
        port: Option<u32>,
    },
}

impl Change {
    /// The change's name in the API (`upsert_route`), for error paths.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::UpsertRoute(_) => "upsert_route",
            Change::DeleteRoute(_) => "delete_route",
            Change::UpsertNeighbor(_) => "upsert_neighbor",
            Change::DeleteNeighbor(_) => "delete_neighbor",
            Change::AddAddress { .. } => "add_address",
            Change::DeleteAddress { .. } => "delete_address",
            Change::UpsertService(_) => "upsert_service",
            Change::DeleteService(_) => "delete_service",
            Change::UpsertBackend { .. } => "upsert_backend",
            Change::DeleteBackend { .. } => "delete_backend",
        }
    }
}

/// The first port with a connected subnet containing `ip`.
pub fn connected_port(ports: &[PortConfig], ip: IpAddr) -> Option<usize> {
    ports
        .iter()
        .position(|p| p.addresses.iter().any(|a| a.contains(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = r#"
dpdk:
  lcores: [0, 1]
  args: ["--in-memory"]
ports:
  - name: inside
    devargs: net_af_packet0,iface=veth-in
    addresses: [10.10.1.1/24, "fd10:1::1/64"]
  - name: outside
    devargs: net_af_xdp0,iface=veth-out
    addresses: [10.10.2.1/24, "fd10:2::1/64"]
    mtu: 1500
routes:
  - prefix: 10.20.0.0/16
    via: [10.10.2.2, 10.10.2.3]
  - prefix: "fd20::/48"
    via: ["fd10:2::2"]
neighbors:
  - address: 10.10.2.9
    mac: "02:00:00:00:00:09"
    port: outside
"#;

    #[test]
    fn issue_example_parses() {
        let c = Config::from_yaml(EXAMPLE).unwrap();
        assert_eq!(c.workers(), 1);
        assert_eq!(c.ports[0].device, "net_af_packet0");
        assert_eq!(c.ports[1].addresses[1].to_string(), "fd10:2::1/64");
        assert_eq!(c.routes[&"10.20.0.0/16".parse().unwrap()].len(), 2);
        assert_eq!(c.neighbors[0].port, 1);
        assert_eq!(c.neighbors[0].mac, [2, 0, 0, 0, 0, 9]);
        assert!(c.ports[0].exception);
    }

    fn bad(from: &str, to: &str) -> ConfigError {
        let text = EXAMPLE.replacen(from, to, 1);
        assert_ne!(text, EXAMPLE, "replacement {from:?} did not apply");
        Config::from_yaml(&text).unwrap_err()
    }

    #[test]
    fn neighbour_tuning_is_checked() {
        let with = |t: &str| {
            Config::from_yaml(&EXAMPLE.replace("neighbors:", &format!("tuning: {t}\nneighbors:")))
        };
        let c = with("{neighbor_probes: 5, solicit_rate: 200, unres_qlen: 4}").unwrap();
        assert_eq!(
            (
                c.tuning.neighbor_probes,
                c.tuning.solicit_rate,
                c.tuning.unres_qlen
            ),
            (5, 200, 4)
        );
        assert_eq!(c.tuning.hold_packets, 256, "default");
        for (t, field, value) in [
            ("{solicit_rate: 0}", "tuning.solicit_rate", "0"),
            ("{solicit_rate: 50000}", "tuning.solicit_rate", "50000"),
            ("{neighbor_probes: 0}", "tuning.neighbor_probes", "0"),
            (
                "{neighbor_retrans_ms: 1}",
                "tuning.neighbor_retrans_ms",
                "1",
            ),
            ("{hold_packets: 100000}", "tuning.hold_packets", "100000"),
            ("{unres_qlen_bytes: 10}", "tuning.unres_qlen_bytes", "10"),
        ] {
            let e = with(t).unwrap_err();
            assert_eq!(e.field, field, "{t}: {e}");
            assert!(e.message.starts_with(value), "{t}: {e}");
        }
        // 4096 held per worker would take over half of a 4096-mbuf pool.
        let e = Config::from_yaml(
            &EXAMPLE
                .replace(
                    "args: [\"--in-memory\"]",
                    "args: [\"--in-memory\"]\n  mbufs: 4096",
                )
                .replace("neighbors:", "tuning: {hold_packets: 4096}\nneighbors:"),
        )
        .unwrap_err();
        assert_eq!(e.field, "tuning.hold_packets");
        assert!(e.message.contains("dpdk.mbufs (4096)"), "{e}");
    }

    #[test]
    fn errors_name_field_and_value() {
        let e = bad("10.20.0.0/16", "10.20.0.0/33");
        assert_eq!(e.field, "routes[0].prefix");
        assert!(e.message.contains("10.20.0.0/33"), "{e}");

        let e = bad("10.20.0.0/16", "10.20.0.1/16");
        assert_eq!(e.field, "routes[0].prefix");
        assert!(e.message.contains("host bits"), "{e}");

        let e = bad("via: [10.10.2.2, 10.10.2.3]", "via: [10.10.2.2, 10.99.2.3]");
        assert_eq!(e.field, "routes[0].via[1]");
        assert!(e.message.contains("10.99.2.3"), "{e}");

        let e = bad("\"02:00:00:00:00:09\"", "\"02:00:00:00:09\"");
        assert_eq!(e.field, "neighbors[0].mac");

        let e = bad("port: outside", "port: outsid");
        assert_eq!(e.field, "neighbors[0].port");
        assert!(e.message.contains("outsid"));

        let e = bad("lcores: [0, 1]", "lcores: [0]");
        assert_eq!(e.field, "dpdk.lcores");

        let e = bad("lcores: [0, 1]", "lcores: [0, \"1@x\"]");
        assert_eq!(e.field, "dpdk.lcores[1]");
        assert!(e.message.contains("1@x"), "{e}");

        let e = bad("lcores: [0, 1]", "lcores: [0, 1, \"1@0\"]");
        assert_eq!(e.field, "dpdk.lcores[2]");

        let e = bad("mtu: 1500", "mtu: 100");
        assert_eq!(e.field, "ports[1].mtu");
        assert!(e.message.contains("100"));

        let e = bad("10.10.2.1/24", "10.10.1.1/24");
        assert_eq!(e.field, "ports[1].addresses[0]");

        let e = bad("name: outside", "name: inside");
        assert_eq!(e.field, "ports[1].name");

        let e = bad("via: [\"fd10:2::2\"]", "via: [\"10.10.2.2\"]");
        assert_eq!(e.field, "routes[1].via[0]");
        assert!(e.message.contains("family"));

        let e = bad("mtu: 1500", "mtu: 1500\n    colour: blue");
        assert!(e.message.contains("colour"), "{e}");

        let e = bad(
            "args: [\"--in-memory\"]",
            "args: [\"--in-memory\", \"--vdev=net_null0\"]",
        );
        assert_eq!(e.field, "dpdk.args[1]");
    }

    #[test]
    fn lcores_may_be_mapped_onto_cpus() {
        let c = Config::from_yaml(&EXAMPLE.replace("lcores: [0, 1]", "lcores: [0, 1, \"2@1\"]"))
            .unwrap();
        assert_eq!(c.dpdk.lcores, vec![0, 1, 2]);
        assert_eq!(c.dpdk.cpus, vec![None, None, Some(1)]);
        assert_eq!(c.workers(), 2);
    }

    #[test]
    fn reload_blockers() {
        let a = Config::from_yaml(EXAMPLE).unwrap();
        let b = Config::from_yaml(&EXAMPLE.replace("10.20.0.0/16", "10.30.0.0/16")).unwrap();
        assert!(b.reload_blocker(&a).is_none());
        let c = Config::from_yaml(&EXAMPLE.replace("veth-out", "veth-x")).unwrap();
        assert_eq!(c.reload_blocker(&a).unwrap().field, "ports[1]");
    }

    #[test]
    fn shipped_configs_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).unwrap();
                Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 2, "configs/ has the examples");
    }

    #[test]
    fn the_running_state_prints_in_the_files_schema_and_reapplies_unchanged() {
        let c = Config::from_yaml(&EXAMPLE.replace("lcores: [0, 1]", "lcores: [0, 1, \"2@1\"]"))
            .unwrap();
        let yaml = c.to_yaml();
        assert_eq!(Config::from_yaml(&yaml).unwrap(), c, "{yaml}");
        assert!(yaml.contains("prefix: 10.20.0.0/16"), "{yaml}");
        assert!(yaml.contains("2@1"), "{yaml}");
    }

    #[test]
    fn every_bad_route_and_neighbour_is_reported() {
        let text = EXAMPLE
            .replace("10.20.0.0/16", "10.20.0.1/16")
            .replace("via: [\"fd10:2::2\"]", "via: [\"fd99::2\"]")
            .replace("port: outside", "port: nowhere");
        let errors = Config::validate_all(serde_yaml::from_str(&text).unwrap()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["routes[0].prefix", "routes[1].via[0]", "neighbors[0].port"]
        );
        assert_eq!(errors[0].value, "10.20.0.1/16");
        assert_eq!(errors[0].resource(), "routes[0]");
        assert_eq!(errors[2].value, "nowhere");
    }

    fn route(prefix: &str, via: &[&str]) -> Change {
        Change::UpsertRoute(RawRoute {
            prefix: prefix.into(),
            via: via.iter().map(|v| v.to_string()).collect(),
        })
    }

    #[test]
    fn deltas_apply_in_order_and_all_or_nothing() {
        let c = Config::from_yaml(EXAMPLE).unwrap();
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        let d = c
            .with_changes(&[
                route("10.30.0.0/16", &["10.10.2.2"]),
                route("10.20.0.0/16", &["10.10.2.3"]),
                Change::DeleteRoute("fd20::/48".into()),
                Change::DeleteNeighbor(RawNeighbor {
                    address: "10.10.2.9".into(),
                    mac: String::new(),
                    port: "outside".into(),
                }),
            ])
            .unwrap();
        assert_eq!(d.routes.len(), 2);
        assert_eq!(
            d.routes[&p("10.20.0.0/16")],
            ["10.10.2.3".parse::<IpAddr>().unwrap()]
        );
        assert!(d.neighbors.is_empty());
        // One good and two bad changes: nothing, and both bad ones named.
        let e = c
            .with_changes(&[
                route("10.40.0.0/16", &["10.10.2.2"]),
                route("10.50.0.1/16", &["10.10.2.2"]),
                Change::DeleteRoute("10.99.0.0/16".into()),
            ])
            .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["changes[1].upsert_route.prefix", "changes[2].delete_route"]
        );
        // Removing the subnet a gateway is on breaks the routes through it.
        let e = c
            .with_changes(&[Change::DeleteAddress {
                port: "outside".into(),
                address: "10.10.2.1/24".into(),
            }])
            .unwrap_err();
        assert!(e.iter().any(|e| e.field == "routes[0].via[0]"), "{e:?}");
        // A new subnet makes its gateways usable.
        let d = c
            .with_changes(&[
                Change::AddAddress {
                    port: "inside".into(),
                    address: "10.10.3.1/24".into(),
                },
                route("10.60.0.0/16", &["10.10.3.2"]),
            ])
            .unwrap();
        assert_eq!(d.ports[0].addresses.len(), 3);
        assert!(d.routes.contains_key(&p("10.60.0.0/16")));
    }

    #[test]
    fn over_a_limit_is_an_error_naming_the_field() {
        let many: Vec<String> = (0..=MAX_ADDRESSES)
            .map(|k| format!("10.{}.{}.1/24", 100 + k / 256, k % 256))
            .collect();
        let e = bad(
            "addresses: [10.10.1.1/24, \"fd10:1::1/64\"]",
            &format!("addresses: [{}]", many.join(", ")),
        );
        assert_eq!(e.field, "ports[0].addresses");
        assert!(e.message.contains("at most 256"), "{e}");
        let hops: Vec<String> = (10..75).map(|k| format!("10.10.2.{k}")).collect();
        let e = bad(
            "via: [10.10.2.2, 10.10.2.3]",
            &format!("via: [{}]", hops.join(", ")),
        );
        assert_eq!(e.field, "routes[0].via");
        assert!(e.message.contains("at most 64"), "{e}");
        let d = Config::from_yaml(EXAMPLE)
            .unwrap()
            .with_changes(&vec![
                Change::DeleteRoute("10.20.0.0/16".into());
                MAX_CHANGES + 1
            ])
            .unwrap_err();
        assert_eq!(d[0].field, "changes");
    }

    #[test]
    fn prefix_parsing() {
        assert_eq!("10.0.0.0/8".parse::<Prefix>().unwrap().len, 8);
        assert_eq!("10.0.0.1".parse::<Prefix>().unwrap().len, 32);
        assert_eq!("::/0".parse::<Prefix>().unwrap().len, 0);
        assert!("10.0.0.0/x".parse::<Prefix>().is_err());
        assert!("fd00::/129".parse::<Prefix>().is_err());
        let p: Prefix = "10.1.2.3/16".parse().unwrap();
        assert_eq!(p.network().to_string(), "10.1.0.0/16");
        assert!(p.contains("10.1.200.1".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
    }
}
