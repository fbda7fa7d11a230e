//! The NAT part of the model (issue 5): SNAT and DNAT rules, timeouts and the flow table's
//! size, as the file and the API give them (`nat:`), checked like the rest of the config:
//! every bad rule is reported with its field and value.
//!
//! ```yaml
//! nat:
//!   snat:
//!     - name: egress
//!       match: {from: [10.10.1.0/24, "fd10:1::/64"], out: outside}
//!       to: {addresses: [10.10.2.1, "fd10:2::1"], ports: "1024-65535"}
//!   dnat:
//!     - name: web
//!       match: {address: 10.10.2.1, protocol: tcp, port: 8080}
//!       to: {address: 10.10.1.2, port: 80}
//!   timeouts: {tcp_established: 7440, tcp_transitory: 240, udp: 300, icmp: 60}
//!   max_flows: 1048576
//! ```

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, PortConfig, Prefix};

// ---- raw, as written ----

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNat {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snat: Vec<RawSnat>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dnat: Vec<RawDnat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RawTimeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matches: RawSnatMatch,
    #[serde(default)]
    pub to: RawSnatTo,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnatMatch {
    /// Source prefixes.
    pub from: Vec<String>,
    /// The egress port's name.
    pub out: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnatTo {
    /// Pool addresses or prefixes; left out: the egress port's own address of each family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
    /// "LOW-HIGH" (default 1024-65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matches: RawDnatMatch,
    pub to: RawDnatTo,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnatMatch {
    pub address: String,
    /// tcp | udp
    pub protocol: String,
    /// Left out: every port of the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnatTo {
    pub address: String,
    /// Left out: the port the packet was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub tcp_established: Option<u64>,
    pub tcp_transitory: Option<u64>,
    pub udp: Option<u64>,
    pub icmp: Option<u64>,
}

// ---- checked ----

/// The NAT configuration, checked. Rules are numbered in order (SNAT from 0, DNAT after
/// them): flows refer to their rule by that id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    pub snat: Vec<SnatRule>,
    pub dnat: Vec<DnatRule>,
    pub timeouts: NatTimeouts,
    /// In all, shared among the workers' tables.
    pub max_flows: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatRule {
    pub name: String,
    pub from: Vec<Prefix>,
    /// The egress port.
    pub out: usize,
    /// Pool prefixes (an address is a /32 or /128), each on a subnet of `out`.
    pub pool: Vec<Prefix>,
    pub ports: (u16, u16),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnatRule {
    pub name: String,
    pub address: IpAddr,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    pub port: Option<u16>,
    pub to_address: IpAddr,
    pub to_port: Option<u16>,
}

impl Default for NatConfig {
    /// No rules; the default timeouts and table size (what a config without `nat:` has).
    fn default() -> Self {
        NatConfig {
            snat: Vec::new(),
            dnat: Vec::new(),
            timeouts: NatTimeouts::default(),
            max_flows: DEFAULT_FLOWS as u32,
        }
    }
}

/// Seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTimeouts {
    pub tcp_established: u64,
    pub tcp_transitory: u64,
    pub udp: u64,
    pub icmp: u64,
}

impl Default for NatTimeouts {
    /// RFC 7857's recommendations.
    fn default() -> Self {
        NatTimeouts {
            tcp_established: 7440,
            tcp_transitory: 240,
            udp: 300,
            icmp: 60,
        }
    }
}

/// `max_flows` when not given.
pub const DEFAULT_FLOWS: u64 = 1 << 20;
/// The largest `max_flows` (92 bytes each: 1.5 GiB of flow tables at the limit).
pub const MAX_FLOWS: u64 = 16 << 20;
/// Rules of each kind.
pub const MAX_RULES: usize = 4096;

fn err(field: String, value: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        value: value.to_string(),
        message: message.into(),
    }
}

/// The port whose subnet holds `ip`, if any ("owns" it: answers ARP/ND for it).
fn owner(ports: &[PortConfig], ip: IpAddr) -> Option<usize> {
    ports
        .iter()
        .position(|p| p.addresses.iter().any(|a| a.contains(ip)))
}

fn port_number(v: u32, f: &str) -> Result<u16, ConfigError> {
    u16::try_from(v).ok().filter(|p| *p != 0).ok_or_else(|| {
        err(
            f.to_string(),
            &v.to_string(),
            format!("{v}: a port is 1..=65535"),
        )
    })
}

/// Check `raw` against the ports; every bad rule is reported (up to `max_errors`).
pub fn validate(
    raw: Option<&RawNat>,
    ports: &[PortConfig],
    max_errors: usize,
) -> Result<NatConfig, Vec<ConfigError>> {
    let Some(raw) = raw else {
        return Ok(NatConfig::default());
    };
    let mut errors = Vec::new();
    let mut note = |e: ConfigError| {
        if errors.len() < max_errors {
            errors.push(e)
        }
    };
    for (what, n) in [("nat.snat", raw.snat.len()), ("nat.dnat", raw.dnat.len())] {
        if n > MAX_RULES {
            note(err(
                what.into(),
                "",
                format!("{n} rules: at most {MAX_RULES}"),
            ));
        }
    }
    let mut snat = Vec::new();
    for (i, r) in raw.snat.iter().enumerate() {
        match check_snat(r, i, ports) {
            Ok(rule) => snat.push(rule),
            Err(e) => note(e),
        }
    }
    let mut dnat: Vec<DnatRule> = Vec::new();
    for (i, r) in raw.dnat.iter().enumerate() {
        match check_dnat(r, i, ports) {
            Ok(rule) => {
                let clash = dnat.iter().position(|o| {
                    o.address == rule.address
                        && o.protocol == rule.protocol
                        && (o.port.is_none() || rule.port.is_none() || o.port == rule.port)
                });
                match clash {
                    Some(o) => note(err(
                        format!("nat.dnat[{i}].match"),
                        &r.matches.address,
                        format!(
                            "overlaps nat.dnat[{o}] ({} {}{})",
                            r.matches.protocol,
                            rule.address,
                            rule.port.map(|p| format!(" port {p}")).unwrap_or_default()
                        ),
                    )),
                    None => dnat.push(rule),
                }
            }
            Err(e) => note(e),
        }
    }
    let t = raw.timeouts.clone().unwrap_or_default();
    let d = NatTimeouts::default();
    let timeouts = NatTimeouts {
        tcp_established: t.tcp_established.unwrap_or(d.tcp_established),
        tcp_transitory: t.tcp_transitory.unwrap_or(d.tcp_transitory),
        udp: t.udp.unwrap_or(d.udp),
        icmp: t.icmp.unwrap_or(d.icmp),
    };
    for (k, v) in [
        ("tcp_established", timeouts.tcp_established),
        ("tcp_transitory", timeouts.tcp_transitory),
        ("udp", timeouts.udp),
        ("icmp", timeouts.icmp),
    ] {
        if !(1..=7 * 86_400).contains(&v) {
            note(err(
                format!("nat.timeouts.{k}"),
                &v.to_string(),
                format!("{v}: seconds in 1..=604800"),
            ));
        }
    }
    let max_flows = raw.max_flows.unwrap_or(DEFAULT_FLOWS);
    if !(1024..=MAX_FLOWS).contains(&max_flows) {
        note(err(
            "nat.max_flows".into(),
            &max_flows.to_string(),
            format!("{max_flows}: must be in 1024..={MAX_FLOWS}"),
        ));
    }
    if errors.is_empty() {
        Ok(NatConfig {
            snat,
            dnat,
            timeouts,
            max_flows: max_flows as u32,
        })
    } else {
        Err(errors)
    }
}

fn check_snat(r: &RawSnat, i: usize, ports: &[PortConfig]) -> Result<SnatRule, ConfigError> {
    let at = |k: &str| format!("nat.snat[{i}].{k}");
    let out = ports
        .iter()
        .position(|p| p.name == r.matches.out)
        .ok_or_else(|| {
            err(
                at("match.out"),
                &r.matches.out,
                format!("{:?} is not the name of a port", r.matches.out),
            )
        })?;
    if r.matches.from.is_empty() {
        return Err(err(
            at("match.from"),
            "",
            "at least one source prefix is needed",
        ));
    }
    let mut from = Vec::new();
    for (j, s) in r.matches.from.iter().enumerate() {
        let f = at(&format!("match.from[{j}]"));
        let p: Prefix = s.parse().map_err(|m: String| err(f.clone(), s, m))?;
        if p.network() != p {
            return Err(err(
                f,
                s,
                format!("{s:?} has host bits set (did you mean {}?)", p.network()),
            ));
        }
        from.push(p);
    }
    let mut pool = Vec::new();
    match &r.to.addresses {
        Some(list) => {
            if list.is_empty() {
                return Err(err(
                    at("to.addresses"),
                    "",
                    "empty: leave it out to use the port's own address",
                ));
            }
            for (j, s) in list.iter().enumerate() {
                let f = at(&format!("to.addresses[{j}]"));
                let p: Prefix = s.parse().map_err(|m: String| err(f.clone(), s, m))?;
                if p.network() != p {
                    return Err(err(f, s, format!("{s:?} has host bits set")));
                }
                // The pool must be on a subnet of the egress port: replies come back to it
                // there, and Ferry answers ARP/ND for it.
                let on_out = ports[out]
                    .addresses
                    .iter()
                    .any(|a| a.len <= p.len && a.contains(p.addr));
                if !on_out {
                    return Err(err(
                        f,
                        s,
                        format!(
                            "{p} is not on a subnet of port {:?}: no port owns it",
                            r.matches.out
                        ),
                    ));
                }
                pool.push(p);
            }
        }
        None => {
            // The port's own address of each family the rule's sources have.
            for fam4 in [true, false] {
                if !from.iter().any(|p| p.addr.is_ipv4() == fam4) {
                    continue;
                }
                let own = ports[out]
                    .addresses
                    .iter()
                    .find(|a| a.addr.is_ipv4() == fam4);
                match own {
                    Some(a) => pool.push(Prefix {
                        addr: a.addr,
                        len: a.max_len(),
                    }),
                    None => {
                        return Err(err(
                            at("to.addresses"),
                            "",
                            format!(
                                "left out, but port {:?} has no IPv{} address to use",
                                r.matches.out,
                                if fam4 { 4 } else { 6 }
                            ),
                        ))
                    }
                }
            }
        }
    }
    for (j, p) in from.iter().enumerate() {
        if !pool.iter().any(|q| q.addr.is_ipv4() == p.addr.is_ipv4()) {
            return Err(err(
                at(&format!("match.from[{j}]")),
                &r.matches.from[j],
                format!("no pool address of the same family as {p}"),
            ));
        }
    }
    let ports_range = match &r.to.ports {
        None => (1024, 65535),
        Some(s) => {
            let f = at("to.ports");
            let parsed = s
                .split_once('-')
                .and_then(|(a, b)| {
                    Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                })
                .or_else(|| s.trim().parse::<u16>().ok().map(|p| (p, p)));
            match parsed {
                Some((a, b)) if a >= 1 && a <= b => (a, b),
                _ => {
                    return Err(err(
                        f,
                        s,
                        format!("{s:?}: \"LOW-HIGH\" with 1 <= LOW <= HIGH <= 65535"),
                    ))
                }
            }
        }
    };
    Ok(SnatRule {
        name: r.name.clone().unwrap_or_else(|| format!("snat{i}")),
        from,
        out,
        pool,
        ports: ports_range,
    })
}

fn check_dnat(r: &RawDnat, i: usize, ports: &[PortConfig]) -> Result<DnatRule, ConfigError> {
    let at = |k: &str| format!("nat.dnat[{i}].{k}");
    let m = &r.matches;
    let address: IpAddr = m.address.trim().parse().map_err(|_| {
        err(
            at("match.address"),
            &m.address,
            format!("{:?} is not an IP address", m.address),
        )
    })?;
    if owner(ports, address).is_none() {
        return Err(err(
            at("match.address"),
            &m.address,
            format!("{address} is not on a subnet of any port: no port owns it"),
        ));
    }
    let protocol = match m.protocol.as_str() {
        "tcp" => 6,
        "udp" => 17,
        other => {
            return Err(err(
                at("match.protocol"),
                other,
                format!("{other:?}: tcp or udp"),
            ));
        }
    };
    let port = m
        .port
        .map(|p| port_number(p, &at("match.port")))
        .transpose()?;
    let to_address: IpAddr = r.to.address.trim().parse().map_err(|_| {
        err(
            at("to.address"),
            &r.to.address,
            format!("{:?} is not an IP address", r.to.address),
        )
    })?;
    if to_address.is_ipv4() != address.is_ipv4() {
        return Err(err(
            at("to.address"),
            &r.to.address,
            format!("{to_address} is not of the same family as {address}"),
        ));
    }
    let to_port =
        r.to.port
            .map(|p| port_number(p, &at("to.port")))
            .transpose()?;
    if to_port.is_some() && port.is_none() {
        return Err(err(
            at("to.port"),
            &r.to.port.unwrap_or(0).to_string(),
            "a translated port needs match.port (one port to one port)",
        ));
    }
    Ok(DnatRule {
        name: r.name.clone().unwrap_or_else(|| format!("dnat{i}")),
        address,
        protocol,
        port,
        to_address,
        to_port,
    })
}

impl NatConfig {
    /// Whether there is anything to translate.
    pub fn is_empty(&self) -> bool {
        self.snat.is_empty() && self.dnat.is_empty()
    }

    /// The file's form, to print the running state (`ferryctl get config`).
    pub fn to_raw(&self, ports: &[PortConfig]) -> Option<RawNat> {
        if self == &NatConfig::default() {
            return None;
        }
        let proto = |p: u8| if p == 6 { "tcp" } else { "udp" }.to_string();
        Some(RawNat {
            snat: self
                .snat
                .iter()
                .map(|r| RawSnat {
                    name: Some(r.name.clone()),
                    matches: RawSnatMatch {
                        from: r.from.iter().map(|p| p.to_string()).collect(),
                        out: ports[r.out].name.clone(),
                    },
                    to: RawSnatTo {
                        addresses: Some(r.pool.iter().map(|p| p.to_string()).collect()),
                        ports: Some(format!("{}-{}", r.ports.0, r.ports.1)),
                    },
                })
                .collect(),
            dnat: self
                .dnat
                .iter()
                .map(|r| RawDnat {
                    name: Some(r.name.clone()),
                    matches: RawDnatMatch {
                        address: r.address.to_string(),
                        protocol: proto(r.protocol),
                        port: r.port.map(u32::from),
                    },
                    to: RawDnatTo {
                        address: r.to_address.to_string(),
                        port: r.to_port.map(u32::from),
                    },
                })
                .collect(),
            timeouts: Some(RawTimeouts {
                tcp_established: Some(self.timeouts.tcp_established),
                tcp_transitory: Some(self.timeouts.tcp_transitory),
                udp: Some(self.timeouts.udp),
                icmp: Some(self.timeouts.icmp),
            }),
            max_flows: Some(u64::from(self.max_flows)),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
dpdk: { lcores: [0, 1] }
ports:
  - { name: inside, devargs: net_null0, addresses: [10.10.1.1/24, "fd10:1::1/64"] }
  - { name: outside, devargs: net_null1, addresses: [10.10.2.1/24, "fd10:2::1/64"] }
nat:
  snat:
    - name: egress
      match: {from: [10.10.1.0/24, "fd10:1::/64"], out: outside}
      to: {addresses: [10.10.2.1, "fd10:2::1"], ports: "1024-65535"}
  dnat:
    - name: web
      match: {address: 10.10.2.1, protocol: tcp, port: 8080}
      to: {address: 10.10.1.2, port: 80}
  timeouts: {tcp_established: 7440, tcp_transitory: 240, udp: 300, icmp: 60}
  max_flows: 1048576
"#;

    #[test]
    fn the_issue_example_parses_and_round_trips() {
        let c = Config::from_yaml(BASE).unwrap();
        assert_eq!(c.nat.snat[0].out, 1);
        assert_eq!(c.nat.snat[0].pool.len(), 2);
        assert_eq!(c.nat.snat[0].ports, (1024, 65535));
        assert_eq!(c.nat.dnat[0].protocol, 6);
        assert_eq!(c.nat.dnat[0].to_port, Some(80));
        assert_eq!(Config::from_yaml(&c.to_yaml()).unwrap(), c);
        // Left out: the egress port's own address of each family.
        let c = Config::from_yaml(&BASE.replace(
            "      to: {addresses: [10.10.2.1, \"fd10:2::1\"], ports: \"1024-65535\"}\n",
            "",
        ))
        .unwrap();
        assert_eq!(
            c.nat.snat[0]
                .pool
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["10.10.2.1/32", "fd10:2::1/128"]
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let bad = |from: &str, to: &str| {
            let text = BASE.replacen(from, to, 1);
            assert_ne!(text, BASE, "{from:?} did not apply");
            let raw: crate::config::RawConfig = serde_yaml::from_str(&text).unwrap();
            Config::validate_all(raw).unwrap_err()
        };
        let e = bad("addresses: [10.10.2.1, ", "addresses: [192.0.2.1, ");
        assert_eq!(e[0].field, "nat.snat[0].to.addresses[0]");
        assert!(e[0].message.contains("no port owns it"), "{}", e[0]);
        let e = bad("ports: \"1024-65535\"", "ports: \"2000-1000\"");
        assert_eq!(e[0].field, "nat.snat[0].to.ports");
        let e = bad("out: outside", "out: nowhere");
        assert_eq!(
            (e[0].field.as_str(), e[0].value.as_str()),
            ("nat.snat[0].match.out", "nowhere")
        );
        let e = bad(
            "  timeouts:",
            "    - {match: {address: 10.10.2.1, protocol: tcp}, to: {address: 10.10.1.3}}\n  timeouts:",
        );
        assert_eq!(e[0].field, "nat.dnat[1].match");
        assert!(e[0].message.contains("overlaps nat.dnat[0]"), "{}", e[0]);
        let e = bad("protocol: tcp", "protocol: sctp");
        assert_eq!(e[0].field, "nat.dnat[0].match.protocol");
        let e = bad("max_flows: 1048576", "max_flows: 10");
        assert_eq!(e[0].field, "nat.max_flows");
        let e = bad("udp: 300", "udp: 0");
        assert_eq!(e[0].field, "nat.timeouts.udp");
        // Two bad rules: both named.
        let e = bad("out: outside", "out: nowhere")
            .into_iter()
            .chain(bad("address: 10.10.1.2", "address: fd10:1::2"))
            .map(|e| e.field)
            .collect::<Vec<_>>();
        assert_eq!(e, ["nat.snat[0].match.out", "nat.dnat[0].to.address"]);
    }
}
