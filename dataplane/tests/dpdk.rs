//! The DPDK wrapper against the real EAL and PMDs (no mocks): mempools, owned mbufs and
//! their headroom/tailroom edits, rings, and ports on `net_ring` (a loopback vdev) and
//! `net_null`. One EAL for the whole binary, since EAL initialises once per process.
//! Needs root (or the capabilities EAL wants); no hugepages (`--no-huge`).

use std::sync::OnceLock;

use ferry_dataplane::buf::PacketBuf;
use ferry_dataplane::dpdk::{self, Eal, MbufRing, Mempool, Port, PortConfig, RxBurst, TxBuffer};
use ferry_dataplane::wire::ipv4;

struct Env {
    _eal: Eal,
    pool: Mempool,
}

fn env() -> &'static std::sync::Mutex<Env> {
    static ENV: OnceLock<std::sync::Mutex<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let eal = Eal::init(&[
            "-l",
            "0",
            "--no-huge",
            "--no-shconf",
            "-m",
            "256",
            "--no-pci",
            "--vdev=net_ring0",
            "--vdev=net_ring1",
            "--vdev=net_ring2",
            // Receives bursts of empty 100-byte packets (the size the null test checks).
            "--vdev=net_null0,size=100",
            "--log-level=4",
        ])
        .expect("EAL init (run as root)");
        assert!(dpdk::register_thread() || dpdk::lcore_id() != u32::MAX);
        let pool = Mempool::new("test_pool", 4095, 0, 2048 + 128).expect("mempool");
        std::sync::Mutex::new(Env { _eal: eal, pool })
    })
}

/// One queue pair of 512 descriptors.
fn one_queue(mtu: Option<u16>, rx_ip_cksum: bool) -> PortConfig {
    PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 512,
        tx_desc: 512,
        mtu,
        rx_ip_cksum,
        mbuf_fast_free: true,
    }
}

#[test]
fn mbufs_are_owned_and_edited_within_bounds() {
    let e = env().lock().unwrap();
    let before = e.pool.available();
    {
        let mut m = e.pool.alloc().expect("alloc");
        assert_eq!(m.data().len(), 0);
        assert!(m.append(60));
        m.data_mut().copy_from_slice(&[7u8; 60]);
        assert!(m.prepend(4), "default headroom is 128");
        assert_eq!(m.data().len(), 64);
        assert!(m.adj(4));
        assert!(m.trim(10));
        assert_eq!(m.data(), &[7u8; 50][..]);
        assert!(!m.prepend(4096), "more than the headroom is refused");
        assert!(!m.trim(51), "more than the length is refused");
        assert!(!m.append(1 << 15), "more than the tailroom is refused");
        assert!(m.is_contiguous());
        // Exactly the tailroom fits, one byte more does not; trimming to zero is allowed.
        let mut full = e.pool.alloc().expect("alloc");
        assert!(full.append(2048));
        assert!(!full.append(1));
        assert!(full.trim(2048));
        assert!(full.data().is_empty());
        assert_eq!(e.pool.available(), before - 2);
    }
    assert_eq!(
        e.pool.available(),
        before,
        "dropped mbuf returns to the pool"
    );
}

#[test]
fn large_mbufs_hold_a_reassembled_datagram_in_one_segment() {
    // A pool of the largest mbufs (data room 65535; ferryd's af_packet pool has 65,120): one
    // segment takes the largest frame ferryd's af_packet rings hand over (64,958 bytes),
    // and fragment_ipv4 splits it into mbufs of the ordinary pool.
    let e = env().lock().unwrap();
    let big = Mempool::new("test_big", 4, 0, u16::MAX).expect("mempool of 64 KiB mbufs");
    let before = e.pool.available();
    {
        let mut m = big.alloc().expect("alloc");
        assert!(m.append(64_958), "64,958 bytes after 128 of headroom");
        assert!(m.is_contiguous());
        assert!(
            m.append(u16::MAX as usize - 128 - 64_958),
            "up to the data room"
        );
        assert!(!m.append(1), "not past it");
        assert!(m.trim(u16::MAX as usize - 128 - 64_958));
        let d = m.data_mut();
        d[..14].copy_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        ipv4::emit_header(
            &mut d[14..],
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            17,
            64,
            64_924,
            7,
        )
        .expect("header");
        for (i, b) in d[34..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let mut frags = Vec::new();
        let n = ferry_dataplane::router::fragment_ipv4(
            m.data(),
            1500,
            || e.pool.alloc(),
            |f| frags.push(f),
        )
        .expect("fragments");
        assert_eq!(n, 44);
        let mut payload = Vec::new();
        for f in &frags {
            let ip = ipv4::Packet::new_checked(&f.data()[14..]).expect("fragment header");
            assert!(ip.total_len() <= 1500);
            payload.extend_from_slice(ip.payload());
        }
        assert_eq!(&payload[..], &m.data()[34..]);
        assert_eq!(e.pool.available(), before - 44);
    }
    assert_eq!(e.pool.available(), before);
    assert_eq!(
        big.available(),
        4,
        "the large mbuf went back to its own pool"
    );
}

#[test]
fn ring_hands_mbufs_over_and_frees_leftovers() {
    let e = env().lock().unwrap();
    let before = e.pool.available();
    {
        let mut r = MbufRing::new("test_ring", 8, true, true).expect("ring");
        for i in 0..7u8 {
            let mut m = e.pool.alloc().unwrap();
            assert!(m.append(1));
            m.data_mut()[0] = i;
            assert!(r.enqueue(m).is_ok());
        }
        let extra = e.pool.alloc().unwrap();
        assert!(r.enqueue(extra).is_err(), "8-slot ring holds 7");
        assert_eq!(r.dequeue().unwrap().data()[0], 0, "FIFO");
        assert_eq!(r.dequeue().unwrap().data()[0], 1);
    }
    assert_eq!(e.pool.available(), before, "ring drop freed the 5 left");
}

#[test]
fn ring_port_loops_packets_back() {
    let e = env().lock().unwrap();
    let id = dpdk::port_by_name("net_ring0").expect("net_ring0");
    let port = Port::start(id, &one_queue(None, false), &e.pool).expect("start net_ring0");
    assert!(port.link().up);
    let before = e.pool.available();
    let mut tx = TxBuffer::new(id, 0);
    for i in 0..40u8 {
        let mut m = e.pool.alloc().unwrap();
        assert!(m.append(64));
        m.data_mut()[0] = i;
        assert_eq!(tx.push(m), 0);
    }
    assert_eq!(tx.flush(), 0, "all 40 sent");
    let mut got = Vec::new();
    let mut burst = RxBurst::default();
    for _ in 0..10 {
        burst.recv(id, 0);
        for m in burst.by_ref() {
            got.push(m.data()[0]);
        }
    }
    assert_eq!(
        got,
        (0..40).collect::<Vec<u8>>(),
        "net_ring loops tx back to rx in order"
    );
    drop(burst);
    assert_eq!(e.pool.available(), before, "no mbuf leaked through rx/tx");
    let s = port.stats();
    assert_eq!((s.opackets, s.ipackets), (40, 40));
}

/// A transmit queue that is full: net_ring's ring (1024 slots) takes what fits, the rest is
/// freed and counted as dropped by `push`/`flush` (what the worker adds to `drop_tx_full`),
/// and nothing leaks. Nothing reads the ring while it fills.
#[test]
fn a_full_tx_queue_drops_and_frees_the_rest() {
    let e = env().lock().unwrap();
    // A port of its own: a port is closed (and gone) when its `Port` drops.
    let id = dpdk::port_by_name("net_ring2").expect("net_ring2");
    let port = Port::start(id, &one_queue(None, false), &e.pool).expect("start net_ring2");
    let before = e.pool.available();
    let stats0 = port.stats();
    let mut tx = TxBuffer::new(id, 0);
    let mut dropped = 0;
    for i in 0..1100u32 {
        let mut m = e.pool.alloc().unwrap();
        assert!(m.append(64));
        m.data_mut()[..4].copy_from_slice(&i.to_be_bytes());
        dropped += tx.push(m);
    }
    dropped += tx.flush();
    assert!(dropped > 0, "the ring filled up");
    assert_eq!(
        e.pool.available(),
        before - (1100 - dropped as u32),
        "what was not taken went back to the pool at once"
    );
    let mut got = Vec::new();
    let mut burst = RxBurst::default();
    while burst.recv(id, 0) > 0 {
        for m in burst.by_ref() {
            got.push(u32::from_be_bytes(m.data()[..4].try_into().unwrap()));
        }
    }
    assert_eq!(
        got.len() + dropped,
        1100,
        "each packet sent or dropped, once"
    );
    assert_eq!(
        got,
        (0..got.len() as u32).collect::<Vec<u32>>(),
        "the first ones, in order"
    );
    assert!(
        (1000..=1024).contains(&got.len()),
        "the ring's size: {}",
        got.len()
    );
    drop(burst);
    assert_eq!(e.pool.available(), before, "no mbuf leaked");
    let s = port.stats();
    assert_eq!(s.opackets - stats0.opackets, got.len() as u64);
}

/// A whole burst forwarded to one port: with nothing buffered it goes out straight from its
/// slots, else behind what is buffered; in order either way, and each mbuf owned once (the
/// pool gets every one back).
#[test]
fn a_whole_burst_is_sent_from_its_slots_or_queued() {
    let e = env().lock().unwrap();
    let id = dpdk::port_by_name("net_ring1").expect("net_ring1");
    let _port = Port::start(id, &one_queue(None, false), &e.pool).expect("start net_ring1");
    let before = e.pool.available();
    let mut tx = TxBuffer::new(id, 0);
    let send = |tx: &mut TxBuffer, tags: std::ops::Range<u8>| {
        for i in tags {
            let mut m = e.pool.alloc().unwrap();
            assert!(m.append(64));
            m.data_mut()[0] = i;
            assert_eq!(tx.push(m), 0);
        }
    };
    let mut burst = RxBurst::default();
    let received = |burst: &mut RxBurst| {
        assert_eq!(burst.recv(id, 0), dpdk::BURST);
        burst
            .packets()
            .iter()
            .map(|m| m.as_ref().unwrap().data()[0])
            .collect::<Vec<u8>>()
    };
    // Nothing buffered: sent at once from the slots.
    send(&mut tx, 0..32);
    assert_eq!(tx.flush(), 0);
    assert_eq!(received(&mut burst), (0..32).collect::<Vec<u8>>());
    assert_eq!(tx.push_burst(&mut burst), (32, 0));
    assert!(burst.packets().is_empty(), "the burst is left empty");
    assert_eq!(tx.flush(), 0, "nothing was left buffered");
    assert_eq!(received(&mut burst), (0..32).collect::<Vec<u8>>());
    // One packet buffered: the burst queues behind it.
    send(&mut tx, 100..101);
    assert_eq!(tx.push_burst(&mut burst), (32, 0));
    assert_eq!(tx.flush(), 0);
    let mut want = vec![100];
    want.extend(0..31);
    assert_eq!(received(&mut burst), want);
    let rest = burst.recv(id, 0);
    assert_eq!(rest, 1);
    assert_eq!(burst.packets()[0].as_ref().unwrap().data()[0], 31);
    // A queue with room for all but one: the burst goes out but for its last packet, which
    // is freed and counted. The ring holds 1023; fill it, take a burst out, put one back.
    assert_eq!(burst.recv(id, 0), 0, "the ring is empty");
    for _ in 0..1023 / 31 {
        send(&mut tx, 0..31);
        assert_eq!(tx.flush(), 0);
    }
    send(&mut tx, 0..(1023 % 31) as u8);
    assert_eq!(tx.flush(), 0, "1023 fit");
    assert_eq!(burst.recv(id, 0), dpdk::BURST);
    send(&mut tx, 0..1);
    assert_eq!(tx.flush(), 0);
    assert_eq!(tx.push_burst(&mut burst), (32, 1), "31 sent, 1 dropped");
    assert!(burst.packets().is_empty());
    let mut drained = 0;
    loop {
        let n = burst.recv(id, 0);
        if n == 0 {
            break;
        }
        drained += n;
    }
    assert_eq!(drained, 1023);
    // A short burst after full ones: the slots beyond it still hold the sent bursts' stale
    // pointers, which must be neither sent nor freed.
    send(&mut tx, 7..10);
    assert_eq!(tx.flush(), 0);
    assert_eq!(burst.recv(id, 0), 3);
    assert_eq!(tx.push_burst(&mut burst), (3, 0));
    assert_eq!(tx.flush(), 0);
    assert_eq!(burst.recv(id, 0), 3);
    let tags: Vec<u8> = burst
        .packets()
        .iter()
        .map(|m| m.as_ref().unwrap().data()[0])
        .collect();
    assert_eq!(tags, vec![7, 8, 9]);
    drop(burst);
    assert_eq!(
        e.pool.available(),
        before,
        "every mbuf back in the pool, once"
    );
}

/// `net_null` (100-byte packets on rx, each tx packet freed): the port counts what is sent
/// and received, the mbufs the PMD takes on tx and gives on rx all come back to the pool, and
/// an unknown device name is an error that names it.
#[test]
fn null_port_counts_and_unknown_port_is_an_error() {
    let e = env().lock().unwrap();
    let id = dpdk::port_by_name("net_null0").expect("net_null0");
    let port = Port::start(id, &one_queue(Some(1500), false), &e.pool).expect("start net_null0");
    assert_eq!(port.info().driver, "net_null");
    assert!(port.link().up);
    let s0 = port.stats();
    let before = e.pool.available();

    // 40 packets of 64 bytes: all taken by the PMD (which frees them).
    let mut tx = TxBuffer::new(id, 0);
    for i in 0..40u8 {
        let mut m = e.pool.alloc().expect("alloc");
        assert!(m.append(64));
        m.data_mut().fill(i);
        assert_eq!(tx.push(m), 0);
    }
    assert_eq!(tx.flush(), 0, "net_null takes every packet");
    assert!(tx.is_empty());
    assert_eq!(e.pool.available(), before, "net_null freed what it sent");

    // Every rx call is a full burst of the configured size, from our pool.
    let mut burst = RxBurst::default();
    let mut received = 0;
    for _ in 0..3 {
        assert_eq!(burst.recv(id, 0), dpdk::BURST);
        for m in burst.by_ref() {
            assert_eq!(m.data().len(), 100, "size=100");
            assert_eq!(m.port(), id);
            received += 1;
        }
    }
    assert_eq!(received, 3 * dpdk::BURST);
    drop(burst);
    assert_eq!(e.pool.available(), before, "no mbuf leaked through rx/tx");

    let s = port.stats();
    assert_eq!(s.opackets - s0.opackets, 40);
    assert_eq!(s.ipackets - s0.ipackets, 3 * dpdk::BURST as u64);
    assert_eq!((s.oerrors, s.ierrors, s.imissed, s.rx_nombuf), (0, 0, 0, 0));
    // (DPDK 22.11's net_null counts packets only: its byte counters stay 0.)

    let err = dpdk::port_by_name("net_nosuch0").unwrap_err().to_string();
    assert!(err.contains("net_nosuch0"), "{err}");
    assert!(dpdk::tsc_hz() > 0);
    let t0 = dpdk::tsc();
    assert!(dpdk::tsc() >= t0);
}

/// A frame: Ethernet to `dst`, IPv4 UDP 198.18.0.1 -> 10.253.0.1 with TTL `ttl` (the
/// marker the test looks for), its header checksum right or not.
fn udp4_frame(dst: [u8; 6], ttl: u8, good_sum: bool) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    f.resize(14 + 28, 0);
    ipv4::emit_header(
        &mut f[14..],
        [198, 18, 0, 1],
        [10, 253, 0, 1],
        17,
        ttl,
        8,
        1,
    )
    .unwrap();
    if !good_sum {
        f[25] ^= 1;
    }
    f[34..42].copy_from_slice(&[0x04, 0x00, 0x00, 0x09, 0, 8, 0, 0]);
    f
}

/// The NIC's IPv4 checksum verdict reaches `Mbuf::ip_cksum_good`: on `net_tap` (whose PMD
/// verifies checksums when the rx offload is on, as a NIC does) a frame the kernel writes
/// with a good header checksum reads good, one with a bad checksum does not.
#[test]
fn tap_port_reports_the_ip_checksum_verdict() {
    let e = env().lock().unwrap();
    let id = e
        ._eal
        .probe("net_tap9,iface=fcksum0", "net_tap9")
        .expect("probe net_tap9");
    let port = Port::start(id, &one_queue(None, true), &e.pool).expect("start net_tap9");
    assert!(
        port.info().rx_ip_cksum,
        "net_tap offers the IPv4 checksum offload"
    );
    let mac = port.info().mac;
    let ip = |args: &[&str]| {
        let ok = std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?}");
    };
    ip(&["link", "set", "fcksum0", "up"]);
    // From the kernel side of the tap, as a host on the wire would send them.
    let hex = |f: Vec<u8>| f.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
         s.bind(('fcksum0', 0))\ns.send(bytes.fromhex('{}'))\ns.send(bytes.fromhex('{}'))\n",
        hex(udp4_frame(mac, 61, true)),
        hex(udp4_frame(mac, 62, false))
    );
    let sent = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "python3 sent the frames on fcksum0");
    let mut verdict = [None, None];
    let mut burst = RxBurst::default();
    for _ in 0..200 {
        burst.recv(id, 0);
        for m in burst.by_ref() {
            let d = m.data();
            // Ours by source MAC and TTL (the kernel sends its own frames on a new link).
            if d.len() >= 34 && d[6..12] == [2, 0, 0, 0, 0, 0x99] && (61..=62).contains(&d[22]) {
                verdict[usize::from(d[22] - 61)] = Some(m.ip_cksum_good());
            }
        }
        if verdict.iter().all(Option::is_some) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        verdict,
        [Some(true), Some(false)],
        "good sum: good; bad sum: not good"
    );
}
