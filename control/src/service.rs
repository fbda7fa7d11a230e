//! The virtual-services part of the model (issue 6): services with their backends and
//! health checks, as the file and the API give them (`services:`), checked like the rest
//! of the config: every bad field is reported with its path and value.
//!
//! ```yaml
//! services:
//!   - name: web
//!     vip: 10.10.2.100
//!     port: 80                  # 0: every port of the VIP
//!     protocol: tcp             # tcp | udp
//!     scheduler: maglev         # rr | wrr | lc | wlc | sh | dh | maglev
//!     forward: nat              # nat | fullnat | dr | ipip | gue
//!     local_addresses: []       # fullnat: sources towards the backends
//!     backends:
//!       - {address: 10.10.1.11, port: 8080, weight: 100}
//!       - {address: 10.10.1.12, port: 8080, weight: 100, drain: true}
//!     health: {type: http, path: /healthz, expect: 200, interval_ms: 500,
//!              timeout_ms: 300, rise: 2, fall: 2}
//! ```

use std::collections::HashSet;
use std::net::IpAddr;

use ferry_dataplane::lb;
use ferry_dataplane::service::{Forward, Sched, WhenDown, MAX_BACKENDS, MAX_SERVICES};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, PortConfig};

// ---- raw, as written ----

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub vip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_s: Option<u64>,
    /// Maglev (and sh, dh) table size: a prime (default 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    /// reject (default) | all: what new flows get when no backend is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_down: Option<String>,
    /// Seconds over which a backend coming up ramps to its full weight (default 0: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_s: Option<u64>,
    /// GUE's UDP destination port (default 6080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gue_port: Option<u32>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<RawHealth>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub address: String,
    /// Left out: the service's port (for a service on every port: the client's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Default 1; 0: no new flows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// tcp | http | none (default tcp).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
}

// ---- checked ----

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: u8,
    pub scheduler: Sched,
    pub forward: Forward,
    pub local_addresses: Vec<IpAddr>,
    pub persistence_s: u32,
    pub table_size: u32,
    pub when_down: WhenDown,
    pub slow_start_s: u32,
    pub gue_port: u16,
    pub backends: Vec<Backend>,
    pub health: Health,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub address: IpAddr,
    /// 0: the client's destination port.
    pub port: u16,
    pub weight: u32,
    pub drain: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    None,
    Tcp,
    Http,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Health {
    pub check: Check,
    /// None: the backend's port.
    pub port: Option<u16>,
    pub path: String,
    pub expect: u16,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            check: Check::None,
            port: None,
            path: "/".into(),
            expect: 200,
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        }
    }
}

/// Backends of one service.
pub const MAX_BACKENDS_PER_SERVICE: usize = 4096;

fn err(field: String, value: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        value: value.to_string(),
        message: message.into(),
    }
}

fn protocol_name(p: u8) -> &'static str {
    if p == 6 {
        "tcp"
    } else {
        "udp"
    }
}

/// Check every service (up to `max_errors` errors reported).
pub fn validate(
    raw: &[RawService],
    ports: &[PortConfig],
    max_errors: usize,
) -> Result<Vec<Service>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if raw.len() > MAX_SERVICES - 1 {
        errors.push(err(
            "services".into(),
            "",
            format!("{} services: at most {}", raw.len(), MAX_SERVICES - 1),
        ));
        return Err(errors);
    }
    let mut out: Vec<Service> = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    let mut listeners = std::collections::HashMap::new();
    let mut total = 0usize;
    for (i, r) in raw.iter().enumerate() {
        if errors.len() >= max_errors {
            break;
        }
        match check(r, &format!("services[{i}]"), ports) {
            Ok(s) => {
                if !names.insert(s.name.clone()) {
                    errors.push(err(
                        format!("services[{i}].name"),
                        &s.name,
                        "another service has this name",
                    ));
                    continue;
                }
                if let Some(o) = listeners.insert((s.vip, s.protocol, s.port), i) {
                    errors.push(err(
                        format!("services[{i}].vip"),
                        &r.vip,
                        format!(
                            "services[{o}] already listens on {} {} port {}",
                            protocol_name(s.protocol),
                            s.vip,
                            s.port
                        ),
                    ));
                    continue;
                }
                total += s.backends.len();
                out.push(s);
            }
            Err(e) => errors.push(e),
        }
    }
    if total > MAX_BACKENDS {
        errors.push(err(
            "services".into(),
            "",
            format!("{total} backends in all: at most {MAX_BACKENDS}"),
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn parse_ip(s: &str, field: String) -> Result<IpAddr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| err(field, s, format!("{s:?} is not an IP address")))
}

fn pick<T: Copy>(table: &[(&'static str, T)], v: &str, field: String) -> Result<T, ConfigError> {
    table
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            err(field, v, format!("{v:?}: one of {}", names.join(", ")))
        })
}

fn port16(v: u32, field: String, zero_ok: bool) -> Result<u16, ConfigError> {
    match u16::try_from(v) {
        Ok(p) if p != 0 || zero_ok => Ok(p),
        _ => Err(err(
            field,
            &v.to_string(),
            format!("{v}: a port is {}..=65535", if zero_ok { 0 } else { 1 }),
        )),
    }
}

/// Check one service (`at`: its path, "services[3]").
pub fn check(r: &RawService, at: &str, ports: &[PortConfig]) -> Result<Service, ConfigError> {
    let f = |k: &str| format!("{at}.{k}");
    let name_ok = !r.name.is_empty()
        && r.name.len() <= 63
        && r.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(err(
            f("name"),
            &r.name,
            "1 to 63 characters of letters, digits, '-', '_' and '.'",
        ));
    }
    let vip = parse_ip(&r.vip, f("vip"))?;
    if vip.is_unspecified() || vip.is_multicast() || vip.is_loopback() {
        return Err(err(f("vip"), &r.vip, "a unicast address is needed"));
    }
    let port = port16(r.port.unwrap_or(0), f("port"), true)?;
    let protocol = match r.protocol.as_str() {
        "tcp" => 6,
        "udp" => 17,
        o => return Err(err(f("protocol"), o, format!("{o:?}: tcp or udp"))),
    };
    let scheduler = pick(
        &Sched::ALL,
        r.scheduler.as_deref().unwrap_or("wlc"),
        f("scheduler"),
    )?;
    let forward = pick(
        &Forward::ALL,
        r.forward.as_deref().unwrap_or("nat"),
        f("forward"),
    )?;
    let when_down = match r.when_down.as_deref().unwrap_or("reject") {
        "reject" => WhenDown::Reject,
        "all" => WhenDown::All,
        o => return Err(err(f("when_down"), o, format!("{o:?}: reject or all"))),
    };
    let on_subnet = |a: IpAddr| {
        ports
            .iter()
            .any(|p| p.addresses.iter().any(|x| x.contains(a)))
    };
    let mut local_addresses = Vec::new();
    for (j, s) in r.local_addresses.iter().enumerate() {
        let fl = f(&format!("local_addresses[{j}]"));
        let a = parse_ip(s, fl.clone())?;
        if a.is_ipv4() != vip.is_ipv4() {
            return Err(err(
                fl,
                s,
                format!("not of the same family as the VIP {vip}"),
            ));
        }
        if !on_subnet(a) {
            return Err(err(
                fl,
                s,
                format!("{a} is not on a subnet of any port: replies could not reach it"),
            ));
        }
        local_addresses.push(a);
    }
    match (forward, local_addresses.is_empty()) {
        (Forward::FullNat, true) => {
            return Err(err(
                f("local_addresses"),
                "",
                "fullnat needs at least one local address (the source towards backends)",
            ))
        }
        (Forward::FullNat, false) => {}
        (_, false) => {
            return Err(err(
                f("local_addresses"),
                &r.local_addresses.join(","),
                "only fullnat uses local addresses",
            ))
        }
        _ => {}
    }
    let persistence_s = r.persistence_s.unwrap_or(0);
    if persistence_s > 86_400 {
        return Err(err(
            f("persistence_s"),
            &persistence_s.to_string(),
            "seconds in 0..=86400",
        ));
    }
    let table_size = r.table_size.unwrap_or(lb::MAGLEV_DEFAULT);
    if !(251..=lb::MAGLEV_MAX).contains(&table_size) || !lb::is_prime(table_size) {
        return Err(err(
            f("table_size"),
            &table_size.to_string(),
            format!("a prime in 251..={} (65537 by default)", lb::MAGLEV_MAX),
        ));
    }
    let slow_start_s = r.slow_start_s.unwrap_or(0);
    if slow_start_s > 600 {
        return Err(err(
            f("slow_start_s"),
            &slow_start_s.to_string(),
            "seconds in 0..=600",
        ));
    }
    let gue_port = port16(r.gue_port.unwrap_or(6080), f("gue_port"), false)?;
    if r.backends.len() > MAX_BACKENDS_PER_SERVICE {
        return Err(err(
            f("backends"),
            "",
            format!(
                "{} backends: at most {MAX_BACKENDS_PER_SERVICE} per service",
                r.backends.len()
            ),
        ));
    }
    let mut backends: Vec<Backend> = Vec::with_capacity(r.backends.len());
    let mut seen = HashSet::with_capacity(r.backends.len());
    for (j, b) in r.backends.iter().enumerate() {
        let b = check_backend(b, &f(&format!("backends[{j}]")), vip, port, forward, ports)?;
        if !seen.insert((b.address, b.port)) {
            return Err(err(
                f(&format!("backends[{j}]")),
                &r.backends[j].address,
                "another backend of the service has this address and port",
            ));
        }
        backends.push(b);
    }
    let health = check_health(r.health.as_ref(), &f("health"))?;
    Ok(Service {
        name: r.name.clone(),
        vip,
        port,
        protocol,
        scheduler,
        forward,
        local_addresses,
        persistence_s: persistence_s as u32,
        table_size,
        when_down,
        slow_start_s: slow_start_s as u32,
        gue_port,
        backends,
        health,
    })
}

/// Check one backend of a service with this VIP, port and forwarding (`at`: its path).
pub fn check_backend(
    b: &RawBackend,
    at: &str,
    vip: IpAddr,
    port: u16,
    forward: Forward,
    ports: &[PortConfig],
) -> Result<Backend, ConfigError> {
    let f = |k: &str| format!("{at}.{k}");
    let address = parse_ip(&b.address, f("address"))?;
    if address.is_ipv4() != vip.is_ipv4() {
        return Err(err(
            f("address"),
            &b.address,
            format!("not of the same family as the VIP {vip}"),
        ));
    }
    if address.is_unspecified() || address.is_multicast() || address == vip {
        return Err(err(
            f("address"),
            &b.address,
            "a unicast address, not the VIP",
        ));
    }
    let bport = match b.port {
        None => port,
        Some(p) => port16(p, f("port"), false)?,
    };
    if bport != port && !forward.two_way() {
        return Err(err(
            f("port"),
            &bport.to_string(),
            format!(
                "{} forwarding does not translate ports: the backend gets the service's port",
                forward.name()
            ),
        ));
    }
    if port == 0 && bport != 0 {
        return Err(err(
            f("port"),
            &bport.to_string(),
            "a service on every port keeps the client's port: leave the backend's out",
        ));
    }
    if forward == Forward::Dr {
        let connected = ports
            .iter()
            .any(|p| p.addresses.iter().any(|x| x.contains(address)));
        if !connected {
            return Err(err(
                f("address"),
                &b.address,
                format!("dr rewrites MACs only: {address} must be on a subnet of a port"),
            ));
        }
    }
    let weight = b.weight.unwrap_or(1);
    if weight > 65_535 {
        return Err(err(f("weight"), &weight.to_string(), "0..=65535"));
    }
    Ok(Backend {
        address,
        port: bport,
        weight,
        drain: b.drain.unwrap_or(false),
    })
}

fn check_health(h: Option<&RawHealth>, at: &str) -> Result<Health, ConfigError> {
    let d = Health::default();
    let Some(h) = h else {
        return Ok(d);
    };
    let f = |k: &str| format!("{at}.{k}");
    let check = match h.kind.as_deref().unwrap_or("tcp") {
        "none" => Check::None,
        "tcp" => Check::Tcp,
        "http" => Check::Http,
        o => return Err(err(f("type"), o, format!("{o:?}: tcp, http or none"))),
    };
    let port = h.port.map(|p| port16(p, f("port"), false)).transpose()?;
    let path = h.path.clone().unwrap_or(d.path);
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(f("path"), &path, "an absolute path without spaces"));
    }
    let expect = h.expect.unwrap_or(200);
    if !(100..=599).contains(&expect) {
        return Err(err(
            f("expect"),
            &expect.to_string(),
            "an HTTP status, 100..=599",
        ));
    }
    let interval_ms = h.interval_ms.unwrap_or(d.interval_ms);
    if !(100..=3_600_000).contains(&interval_ms) {
        return Err(err(
            f("interval_ms"),
            &interval_ms.to_string(),
            "100..=3600000",
        ));
    }
    let timeout_ms = h.timeout_ms.unwrap_or(d.timeout_ms.min(interval_ms));
    if !(10..=interval_ms).contains(&timeout_ms) {
        return Err(err(
            f("timeout_ms"),
            &timeout_ms.to_string(),
            format!("10..=interval_ms ({interval_ms})"),
        ));
    }
    let rise = h.rise.unwrap_or(d.rise);
    let fall = h.fall.unwrap_or(d.fall);
    for (k, v) in [("rise", rise), ("fall", fall)] {
        if !(1..=100).contains(&v) {
            return Err(err(f(k), &v.to_string(), "1..=100"));
        }
    }
    Ok(Health {
        check,
        port,
        path,
        expect: expect as u16,
        interval_ms,
        timeout_ms,
        rise,
        fall,
    })
}

impl Service {
    /// The file's form.
    pub fn to_raw(&self) -> RawService {
        let h = &self.health;
        RawService {
            name: self.name.clone(),
            vip: self.vip.to_string(),
            port: Some(u32::from(self.port)),
            protocol: protocol_name(self.protocol).into(),
            scheduler: Some(self.scheduler.name().into()),
            forward: Some(self.forward.name().into()),
            local_addresses: self.local_addresses.iter().map(|a| a.to_string()).collect(),
            persistence_s: (self.persistence_s != 0).then_some(u64::from(self.persistence_s)),
            table_size: Some(self.table_size),
            when_down: Some(
                match self.when_down {
                    WhenDown::Reject => "reject",
                    WhenDown::All => "all",
                }
                .into(),
            ),
            slow_start_s: Some(u64::from(self.slow_start_s)),
            gue_port: (self.forward == Forward::Gue).then_some(u32::from(self.gue_port)),
            backends: self.backends.iter().map(Backend::to_raw).collect(),
            health: Some(RawHealth {
                kind: Some(
                    match h.check {
                        Check::None => "none",
                        Check::Tcp => "tcp",
                        Check::Http => "http",
                    }
                    .into(),
                ),
                port: h.port.map(u32::from),
                path: Some(h.path.clone()),
                expect: Some(u32::from(h.expect)),
                interval_ms: Some(h.interval_ms),
                timeout_ms: Some(h.timeout_ms),
                rise: Some(h.rise),
                fall: Some(h.fall),
            }),
        }
    }
}

impl Backend {
    pub fn to_raw(&self) -> RawBackend {
        RawBackend {
            address: self.address.to_string(),
            port: (self.port != 0).then_some(u32::from(self.port)),
            weight: Some(self.weight),
            drain: Some(self.drain),
        }
    }

    /// "10.0.0.1:80", "[fd00::1]:80".
    pub fn endpoint(&self) -> String {
        std::net::SocketAddr::new(self.address, self.port).to_string()
    }
}

/// Parse "ADDR:PORT" or "[V6]:PORT" or a bare address (port 0 / the service's).
pub fn parse_endpoint(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Some((a.ip(), Some(a.port())));
    }
    s.trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .ok()
        .map(|a| (a, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(services: &str) -> Result<Config, Vec<ConfigError>> {
        let text = format!(
            "dpdk: {{lcores: [0, 1]}}\nports:\n  - {{name: a, devargs: net_null0, addresses: [10.0.1.1/24, \"fd00:1::1/64\"]}}\n  - {{name: b, devargs: net_null1, addresses: [10.0.2.1/24]}}\nservices:\n{services}"
        );
        let raw: crate::config::RawConfig = serde_yaml::from_str(&text).unwrap();
        Config::validate_all(raw)
    }

    #[test]
    fn a_service_is_checked_field_by_field() {
        let ok = cfg("  - {name: web, vip: 10.0.2.100, port: 80, protocol: tcp, scheduler: maglev, forward: fullnat, local_addresses: [10.0.1.250], backends: [{address: 10.0.1.11, port: 8080, weight: 100}, {address: 10.0.1.12, port: 8080, drain: true}], health: {type: http, path: /healthz, interval_ms: 500, timeout_ms: 300, rise: 2, fall: 2}}\n").unwrap();
        let s = &ok.services[0];
        assert_eq!((s.port, s.protocol, s.table_size), (80, 6, 65537));
        assert_eq!(s.backends[1].weight, 1);
        assert!(s.backends[1].drain);
        assert_eq!(s.health.check, Check::Http);
        // Round trip through the file's form.
        let again = Config::validate_all(ok.to_raw()).unwrap();
        assert_eq!(again.services, ok.services);

        let bad = |text: &str, field: &str| {
            let e = cfg(text).unwrap_err();
            assert!(
                e.iter().any(|e| e.field == field),
                "{text}: wanted an error on {field}, got {e:?}"
            );
        };
        bad(
            "  - {name: w, vip: 10.0.2.100, protocol: sctp}\n",
            "services[0].protocol",
        );
        bad(
            "  - {name: w, vip: 10.0.2.100, protocol: tcp, scheduler: random}\n",
            "services[0].scheduler",
        );
        bad(
            "  - {name: w, vip: 10.0.2.100, protocol: tcp, forward: fullnat}\n",
            "services[0].local_addresses",
        );
        bad(
            "  - {name: w, vip: 10.0.2.100, protocol: tcp, table_size: 65536}\n",
            "services[0].table_size",
        );
        bad("  - {name: w, vip: 10.0.2.100, port: 80, protocol: tcp, backends: [{address: \"fd00:1::5\"}]}\n", "services[0].backends[0].address");
        bad("  - {name: w, vip: 10.0.2.100, port: 80, protocol: tcp, forward: dr, backends: [{address: 10.0.1.5, port: 81}]}\n", "services[0].backends[0].port");
        bad("  - {name: w, vip: 10.0.2.100, port: 80, protocol: tcp, forward: dr, backends: [{address: 10.9.9.9}]}\n", "services[0].backends[0].address");
        bad("  - {name: w, vip: 10.0.2.100, port: 80, protocol: tcp, backends: [{address: 10.0.1.5}, {address: 10.0.1.5}]}\n", "services[0].backends[1]");
        bad("  - {name: w, vip: 10.0.2.100, port: 80, protocol: tcp, health: {interval_ms: 500, timeout_ms: 900}}\n", "services[0].health.timeout_ms");
        bad("  - {name: w, vip: 10.0.2.100, port: 80, protocol: tcp}\n  - {name: w, vip: 10.0.2.101, port: 80, protocol: tcp}\n", "services[1].name");
        bad("  - {name: w, vip: 10.0.2.100, port: 80, protocol: tcp}\n  - {name: x, vip: 10.0.2.100, port: 80, protocol: tcp}\n", "services[1].vip");
        bad("  - {name: w, vip: 10.0.2.100, port: 80, protocol: tcp}\n  - {name: x, vip: 10.0.2.101, port: 80, protocol: tcp, forward: fullnat, local_addresses: [10.0.2.100]}\n", "services[1].local_addresses[0]");
        bad("  - {name: t, vip: 10.0.2.100, port: 80, protocol: tcp, forward: ipip, backends: [{address: 10.9.9.9}]}\n", "services[0].backends[0].address");
    }
}
