//! Built-in health checks for service backends (issue 6).
//!
//! The prober is a thread of its own with a small async runtime: one task per checked
//! backend connects (TCP) or sends `GET path` (HTTP, the status line compared with what is
//! expected) from the node's own kernel, bound to the address of the port that reaches the
//! backend, so probes leave through the port's exception interface and Ferry like any host
//! traffic would. Every interval (with up to a tenth of jitter, so that checks of many
//! backends spread out) each task reports its result to the control thread.
//!
//! The control thread keeps the verdicts ([`HealthBook`]): `fall` failures in a row take
//! a backend down, `rise` successes bring it back; a transition is logged and republishes
//! the service alone (see `compile`). A backend starts up (as keepalived's real servers
//! do): a configuration takes effect at once, and a dead backend goes down after `fall`
//! checks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::service::{Check, Service};

/// A backend, as health checks know it: (service, address, port).
pub type Key = (String, IpAddr, u16);

/// What one backend's checks concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    pub up: bool,
    /// When it last changed (None: never).
    pub changed: Option<Instant>,
    /// The last check's result, for operators ("ok", "connect: refused", "status 503").
    pub last: String,
    ok_run: u32,
    fail_run: u32,
    /// Passive health: the dataplane's counts of connections answered and failed when
    /// last looked at (None: not yet), and until when the backend is ejected.
    seen: Option<(u64, u64)>,
    pub ejected_until: Option<Instant>,
}

impl Default for BackendHealth {
    fn default() -> Self {
        BackendHealth {
            up: true,
            changed: None,
            last: String::new(),
            ok_run: 0,
            fail_run: 0,
            seen: None,
            ejected_until: None,
        }
    }
}

/// Every checked backend's verdict.
#[derive(Debug, Default)]
pub struct HealthBook {
    map: HashMap<Key, BackendHealth>,
}

/// One check's result, from the prober.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub key: Key,
    pub ok: bool,
    pub detail: String,
}

impl HealthBook {
    pub fn get(&self, key: &Key) -> Option<&BackendHealth> {
        self.map.get(key)
    }

    /// Count a check of a backend with these rise and fall; Some(up) if its verdict
    /// changed.
    pub fn report(&mut self, r: Report, rise: u32, fall: u32, now: Instant) -> Option<bool> {
        let h = self.map.entry(r.key).or_default();
        h.last = r.detail;
        if r.ok {
            h.ok_run = h.ok_run.saturating_add(1);
            h.fail_run = 0;
            if !h.up && h.ok_run >= rise {
                h.up = true;
                h.changed = Some(now);
                return Some(true);
            }
        } else {
            h.fail_run = h.fail_run.saturating_add(1);
            h.ok_run = 0;
            if h.up && h.fail_run >= fall {
                h.up = false;
                h.changed = Some(now);
                return Some(false);
            }
        }
        None
    }

    /// Passive health, looked at every [`PASSIVE_EVERY`]: a backend that refused or left
    /// unanswered at least `threshold` connections since the last look, and answered none,
    /// is ejected for [`EJECT_FOR`] (whatever its active checks say), then taken back.
    /// Some(true) when it is ejected, Some(false) when it is taken back.
    pub fn passive(
        &mut self,
        key: &Key,
        (answered, failed): (u64, u64),
        threshold: u32,
        now: Instant,
    ) -> Option<bool> {
        let h = self.map.entry(key.clone()).or_default();
        // (The first look only primes the counts.)
        let (a0, f0) = h.seen.replace((answered, failed))?;
        let (da, df) = (answered.saturating_sub(a0), failed.saturating_sub(f0));
        if let Some(t) = h.ejected_until {
            if now < t {
                return None;
            }
            h.ejected_until = None;
            h.changed = Some(now);
            return Some(false);
        }
        if h.up && da == 0 && df >= u64::from(threshold.max(1)) {
            h.ejected_until = Some(now + EJECT_FOR);
            h.changed = Some(now);
            h.last = format!("passive: {df} connections refused or unanswered, none answered");
            return Some(true);
        }
        None
    }

    /// Forget backends no longer checked (deleted, or their service's check turned off).
    pub fn retain(&mut self, keep: impl Fn(&Key) -> bool) {
        self.map.retain(|k, _| keep(k));
    }

    /// Whether a backend of `s` is up, and the most weight it may schedule with now:
    /// `u32::MAX` (its configured weight, whatever that becomes) unless slow start is
    /// ramping it from 1 to `weight` over `slow_start_s`.
    pub fn state(
        &self,
        s: &Service,
        addr: IpAddr,
        port: u16,
        weight: u32,
        now: Instant,
    ) -> (bool, u32) {
        if s.health.check == Check::None {
            return (true, u32::MAX);
        }
        let Some(h) = self.map.get(&(s.name.clone(), addr, port)) else {
            return (true, u32::MAX);
        };
        if !h.up || h.ejected_until.is_some_and(|t| now < t) {
            return (false, u32::MAX);
        }
        match ramped(weight, h.changed, s.slow_start_s, now) {
            w if w >= weight => (true, u32::MAX),
            w => (true, w),
        }
    }

    /// Whether some backend is still ramping up (the controller republishes as it does).
    pub fn ramping(&self, cfg: &Config, now: Instant) -> bool {
        cfg.services.iter().any(|s| {
            s.slow_start_s > 0
                && s.backends.iter().any(|b| {
                    self.map
                        .get(&(s.name.clone(), b.address, b.port))
                        .is_some_and(|h| {
                            h.up && ramped(b.weight, h.changed, s.slow_start_s, now) < b.weight
                        })
                })
        })
    }
}

fn ramped(weight: u32, since: Option<Instant>, slow_s: u32, now: Instant) -> u32 {
    let Some(t) = since else { return weight };
    if slow_s == 0 || weight == 0 {
        return weight;
    }
    let span = Duration::from_secs(u64::from(slow_s));
    let gone = now.saturating_duration_since(t);
    if gone >= span {
        return weight;
    }
    let w = u128::from(weight) * gone.as_millis() / span.as_millis().max(1);
    (w as u32).clamp(1, weight)
}

/// How often the dataplane's passive counts are looked at.
pub const PASSIVE_EVERY: Duration = Duration::from_secs(1);
/// How long a backend that passive health ejected stays out.
pub const EJECT_FOR: Duration = Duration::from_secs(10);

/// One backend's check, as the prober runs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    pub key: Key,
    pub target: SocketAddr,
    /// Bind to this address (the port's that reaches the backend), if any.
    pub source: Option<IpAddr>,
    pub check: Check,
    pub path: String,
    pub expect: u16,
    pub interval: Duration,
    pub timeout: Duration,
}

/// The checks `cfg` asks for.
pub fn probes(cfg: &Config) -> Vec<Probe> {
    let mut v = Vec::new();
    for s in &cfg.services {
        let h = &s.health;
        if h.check == Check::None {
            continue;
        }
        for b in &s.backends {
            let port = h.port.unwrap_or(if b.port != 0 { b.port } else { s.port });
            if port == 0 {
                continue;
            }
            let source = crate::config::connected_port(&cfg.ports, b.address).and_then(|i| {
                cfg.ports[i]
                    .addresses
                    .iter()
                    .find(|a| a.contains(b.address))
                    .map(|a| a.addr)
            });
            v.push(Probe {
                key: (s.name.clone(), b.address, b.port),
                target: SocketAddr::new(b.address, port),
                source,
                check: h.check,
                path: h.path.clone(),
                expect: h.expect,
                interval: Duration::from_millis(h.interval_ms),
                timeout: Duration::from_millis(h.timeout_ms),
            });
        }
    }
    v
}

/// The control thread's end of the prober.
pub struct Prober {
    specs: tokio::sync::watch::Sender<Vec<Probe>>,
    pub reports: mpsc::Receiver<Report>,
    _thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    /// Start the prober's thread; `control` is woken for each report.
    pub fn start(control: Thread) -> std::io::Result<Prober> {
        let (specs, rx) = tokio::sync::watch::channel(Vec::<Probe>::new());
        let (tx, reports) = mpsc::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("ferry-health".into())
            .spawn(move || rt.block_on(manage(rx, tx, control)))?;
        Ok(Prober {
            specs,
            reports,
            _thread: Some(thread),
        })
    }

    /// Check these backends from now on (tasks of unchanged probes carry on).
    pub fn set(&self, probes: Vec<Probe>) {
        self.specs.send_if_modified(|old| {
            let changed = *old != probes;
            *old = probes;
            changed
        });
    }
}

async fn manage(
    mut specs: tokio::sync::watch::Receiver<Vec<Probe>>,
    tx: mpsc::Sender<Report>,
    control: Thread,
) {
    let mut tasks: HashMap<Probe, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let want: Vec<Probe> = specs.borrow_and_update().clone();
        let keep: std::collections::HashSet<&Probe> = want.iter().collect();
        tasks.retain(|p, t| {
            let k = keep.contains(p);
            if !k {
                t.abort();
            }
            k
        });
        for (i, p) in want.iter().enumerate() {
            if tasks.contains_key(p) {
                continue;
            }
            let (p2, tx, control) = (p.clone(), tx.clone(), control.clone());
            // The first checks spread over an interval.
            let offset = p.interval.mul_f64((i % 97) as f64 / 97.0);
            tasks.insert(
                p.clone(),
                tokio::spawn(async move { run(p2, tx, control, offset).await }),
            );
        }
        if specs.changed().await.is_err() {
            for t in tasks.values() {
                t.abort();
            }
            return;
        }
    }
}

async fn run(p: Probe, tx: mpsc::Sender<Report>, control: Thread, offset: Duration) {
    tokio::time::sleep(offset).await;
    let mut n: u64 = 0;
    loop {
        let started = tokio::time::Instant::now();
        let r = tokio::time::timeout(p.timeout, check(&p)).await;
        let (ok, detail) = match r {
            Ok(Ok(())) => (true, "ok".to_string()),
            Ok(Err(e)) => (false, e),
            Err(_) => (false, format!("timeout after {} ms", p.timeout.as_millis())),
        };
        if tx
            .send(Report {
                key: p.key.clone(),
                ok,
                detail,
            })
            .is_err()
        {
            return;
        }
        control.unpark();
        // Up to a tenth of the interval of jitter, from the probe's own sequence.
        n = n.wrapping_add(1);
        let j = (n ^ u64::from(p.target.port()))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29)
            % 1000;
        let next = p.interval + p.interval.mul_f64(j as f64 / 10_000.0);
        tokio::time::sleep_until(started + next).await;
    }
}

async fn check(p: &Probe) -> Result<(), String> {
    let sock = match p.target {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(src) = p.source {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    let mut s = sock
        .connect(p.target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if p.check != Check::Http {
        return Ok(());
    }
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: ferry-health\r\nConnection: close\r\n\r\n",
        p.path, p.target
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = s
            .read(&mut buf[got..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not HTTP: {:?}", line.lines().next().unwrap_or("")))?;
    if status == p.expect {
        Ok(())
    } else {
        Err(format!("status {status}, expected {}", p.expect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(ok: bool) -> Report {
        Report {
            key: ("web".into(), "10.0.0.1".parse().unwrap(), 80),
            ok,
            detail: String::new(),
        }
    }

    #[test]
    fn fall_and_rise_count_checks_in_a_row() {
        let mut b = HealthBook::default();
        let t = Instant::now();
        assert_eq!(b.report(rep(false), 2, 3, t), None);
        assert_eq!(b.report(rep(false), 2, 3, t), None);
        assert_eq!(
            b.report(rep(true), 2, 3, t),
            None,
            "a success breaks the run"
        );
        assert_eq!(b.report(rep(false), 2, 3, t), None);
        assert_eq!(b.report(rep(false), 2, 3, t), None);
        assert_eq!(b.report(rep(false), 2, 3, t), Some(false));
        assert_eq!(b.report(rep(false), 2, 3, t), None, "already down");
        assert_eq!(b.report(rep(true), 2, 3, t), None);
        assert_eq!(b.report(rep(true), 2, 3, t), Some(true));
    }

    #[test]
    fn passive_failures_eject_for_a_while() {
        let mut b = HealthBook::default();
        let k = rep(true).key;
        let t = Instant::now();
        assert_eq!(
            b.passive(&k, (5, 9), 2, t),
            None,
            "the first look only primes"
        );
        assert_eq!(
            b.passive(&k, (6, 12), 2, t),
            None,
            "answered some: not ejected"
        );
        assert_eq!(b.passive(&k, (6, 13), 2, t), None, "under the threshold");
        assert_eq!(b.passive(&k, (6, 15), 2, t), Some(true));
        let svc = crate::config::Config::from_yaml(
            "dpdk: {lcores: [0, 1]}\nports: [{name: a, devargs: net_null0, addresses: [10.0.0.2/24]}]\nservices: [{name: web, vip: 10.0.0.9, port: 80, protocol: tcp, backends: [{address: 10.0.0.1}], health: {type: tcp}}]\n",
        )
        .unwrap()
        .services
        .remove(0);
        assert!(!b.state(&svc, k.1, 80, 1, t).0, "ejected: down");
        let later = t + EJECT_FOR;
        assert_eq!(b.passive(&k, (6, 15), 2, later), Some(false), "taken back");
        assert!(b.state(&svc, k.1, 80, 1, later).0);
    }

    #[test]
    fn slow_start_ramps_the_weight() {
        let t = Instant::now();
        assert_eq!(ramped(100, None, 10, t), 100);
        assert_eq!(ramped(100, Some(t), 0, t), 100);
        assert_eq!(ramped(100, Some(t), 10, t), 1);
        assert_eq!(ramped(100, Some(t), 10, t + Duration::from_secs(5)), 50);
        assert_eq!(ramped(100, Some(t), 10, t + Duration::from_secs(11)), 100);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn checks_against_real_sockets() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 256];
                let n = s.read(&mut b).await.unwrap_or(0);
                let wants_bad = String::from_utf8_lossy(&b[..n]).contains("/bad");
                let line: &[u8] = if wants_bad {
                    b"HTTP/1.0 503 Service Unavailable\r\n\r\n"
                } else {
                    b"HTTP/1.0 200 OK\r\n\r\n"
                };
                let _ = s.write_all(line).await;
            }
        });
        let probe = |check, path: &str| Probe {
            key: ("s".into(), addr.ip(), addr.port()),
            target: addr,
            source: Some("127.0.0.1".parse().unwrap()),
            check,
            path: path.into(),
            expect: 200,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(check(&probe(Check::Tcp, "/")).await, Ok(()));
        assert_eq!(check(&probe(Check::Http, "/healthz")).await, Ok(()));
        let e = check(&probe(Check::Http, "/bad")).await.unwrap_err();
        assert!(e.contains("503"), "{e}");
        // Nothing listens on port 1.
        let mut p = probe(Check::Tcp, "/");
        p.target.set_port(1);
        assert!(check(&p).await.unwrap_err().starts_with("connect"));
    }
}
