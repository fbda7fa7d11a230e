//! The configuration model: the YAML file (and, later, gRPC pushes) parse into raw serde
//! types, and [`Config::validate`] turns them into a checked [`Config`] or an error naming
//! the field and the value. Nothing is applied before the whole config is valid.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

/// A validation error: the field path (`routes[1].via[0]`) and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// An IP prefix: address and length, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub dpdk: RawDpdk,
    pub ports: Vec<RawPort>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub neighbors: Vec<RawNeighbor>,
    #[serde(default)]
    pub tuning: RawTuning,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpdk {
    /// Lcore ids; "L@C" runs lcore L on CPU C (several lcores may share a CPU in tests).
    pub lcores: Vec<RawLcore>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Mbufs in the packet pool (default 16384 per worker, at least 8191).
    #[serde(default)]
    pub mbufs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawLcore {
    Id(u32),
    Mapped(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub name: String,
    pub devargs: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub vlan: Option<u32>,
    /// Give the port a kernel interface (TAP) for traffic to the node itself. Default true.
    #[serde(default)]
    pub exception: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: String,
    pub via: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNeighbor {
    pub address: String,
    pub mac: String,
    pub port: String,
}

#[derive(Debug, Default, Deserialize)]
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
    pub routes: Vec<Route>,
    pub neighbors: Vec<StaticNeighbor>,
    pub tuning: Tuning,
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
pub struct Route {
    pub prefix: Prefix,
    pub via: Vec<IpAddr>,
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

        // routes
        let mut routes = Vec::new();
        let mut prefixes = HashMap::new();
        for (i, r) in raw.routes.iter().enumerate() {
            let prefix: Prefix = r
                .prefix
                .parse()
                .map_err(|m: String| err(format!("routes[{i}].prefix"), m))?;
            if prefix.network() != prefix {
                return Err(err(
                    format!("routes[{i}].prefix"),
                    format!(
                        "{:?} has host bits set (did you mean {}?)",
                        r.prefix,
                        prefix.network()
                    ),
                ));
            }
            if let Some(o) = prefixes.insert(prefix, i) {
                return Err(err(
                    format!("routes[{i}].prefix"),
                    format!("{prefix} is already routed by routes[{o}]"),
                ));
            }
            if r.via.is_empty() {
                return Err(err(
                    format!("routes[{i}].via"),
                    "at least one next hop is needed",
                ));
            }
            if r.via.len() > 64 {
                return Err(err(
                    format!("routes[{i}].via"),
                    format!("{} next hops: at most 64 in an ECMP group", r.via.len()),
                ));
            }
            let mut via = Vec::new();
            for (j, v) in r.via.iter().enumerate() {
                let f = format!("routes[{i}].via[{j}]");
                let ip: IpAddr = v
                    .trim()
                    .parse()
                    .map_err(|_| err(&f, format!("{v:?} is not an IP address")))?;
                if ip.is_ipv4() != prefix.addr.is_ipv4() {
                    return Err(err(
                        &f,
                        format!("{ip} is not of the same family as {prefix}"),
                    ));
                }
                if connected_port(&ports, ip).is_none() {
                    return Err(err(
                        &f,
                        format!("{ip} is not on a connected subnet of any port"),
                    ));
                }
                if owners.contains_key(&ip) {
                    return Err(err(&f, format!("{ip} is one of this node's own addresses")));
                }
                if via.contains(&ip) {
                    return Err(err(&f, format!("{ip} is listed twice")));
                }
                via.push(ip);
            }
            routes.push(Route { prefix, via });
        }

        // static neighbours
        let mut neighbors = Vec::new();
        for (i, n) in raw.neighbors.iter().enumerate() {
            let address: IpAddr = n.address.trim().parse().map_err(|_| {
                err(
                    format!("neighbors[{i}].address"),
                    format!("{:?} is not an IP address", n.address),
                )
            })?;
            let mac = parse_mac(&n.mac).ok_or_else(|| {
                err(
                    format!("neighbors[{i}].mac"),
                    format!("{:?} is not a MAC address like 02:00:00:00:00:09", n.mac),
                )
            })?;
            if mac[0] & 1 == 1 {
                return Err(err(
                    format!("neighbors[{i}].mac"),
                    format!("{:?} is a multicast MAC", n.mac),
                ));
            }
            let port = *names.get(&n.port).ok_or_else(|| {
                err(
                    format!("neighbors[{i}].port"),
                    format!("{:?} is not the name of a port", n.port),
                )
            })?;
            if !ports[port].addresses.iter().any(|p| p.contains(address))
                && !(matches!(address, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80))
            {
                return Err(err(
                    format!("neighbors[{i}].address"),
                    format!("{address} is not on a subnet of port {:?}", n.port),
                ));
            }
            neighbors.push(StaticNeighbor { address, mac, port });
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

        Ok(Config {
            dpdk: DpdkConfig {
                lcores,
                cpus,
                args: raw.dpdk.args,
                mbufs,
            },
            ports,
            routes,
            neighbors,
            tuning,
        })
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
        if self.tuning != running.tuning {
            return Some(err(
                "tuning",
                "changes to tuning (timers, rates, queue sizes) need a restart",
            ));
        }
        None
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
        assert_eq!(c.routes[0].via.len(), 2);
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
