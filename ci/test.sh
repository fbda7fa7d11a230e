#!/usr/bin/env bash
# Runs every test. On a fresh Debian 12 machine, as root: installs what is needed
# (hack/setup.sh), checks formatting and lints, runs unit, property and golden pcap tests,
# then the namespace tests against the real ferryd with one and with two workers.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

./hack/setup.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== unit, property and golden pcap tests"
cargo test --workspace

echo "== the fast path's portable checks (built for plain x86-64, without the SSE rows path)"
CARGO_TARGET_DIR=target/x86-64 RUSTFLAGS="-C target-cpu=x86-64" \
    cargo clippy -p ferry-dataplane --all-targets -- -D warnings
CARGO_TARGET_DIR=target/x86-64 RUSTFLAGS="-C target-cpu=x86-64" \
    cargo test -p ferry-dataplane --lib -- fastpath router

echo "== snapshot hand-over under valgrind memcheck (use-after-free, double free)"
# Miri and ASan need a nightly toolchain this machine cannot fetch; memcheck checks the
# same property on the real binary: many generations published while workers switch.
bin=$(cargo test -p ferry-dataplane --lib --no-run --message-format=json 2>/dev/null |
  /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "ferry_dataplane":
        print(m["executable"])' | tail -1)
FERRY_SNAPSHOT_GENERATIONS=3000 valgrind --error-exitcode=99 -q --fair-sched=yes "$bin" snapshot::

echo "== release build, benchmark smoke (fails on a crash or zero throughput, never on a number)"
cargo build --release --bin ferryd --bin ferryctl -p ferry --bin ferry-pktgen --bin ferry-svcbench -p ferry-perf
# The lab scripts cannot run here (no NIC, no TRex): the TRex profile's packets and field
# engine are checked against ferry-pktgen's (perf/trex/check.py), the pktgen-dpdk script is
# syntax-checked.
/usr/bin/python3 perf/trex/check.py target/release/ferry-pktgen
luac5.3 -p perf/pktgen-dpdk/ferry.lua
./perf/bench --runs 1 --secs 2 --sizes 64 --no-veth --lb --json "$(mktemp /tmp/ferry-bench-smoke.XXXXXX.json)"
# Services' control side, small: a whole state of 200 services x 20 backends, then health
# changes, each timed until every subscriber runs it.
target/release/ferry-svcbench --services 200 --backends 20 --rounds 5
# Two queues per port: ferryd with two workers, testpmd and l3fwd with two lcores, the
# generator on two queues (all on CPU 1 on a 2-CPU machine: multi-queue works, not scaling).
./perf/bench --runs 1 --secs 2 --sizes 64 --no-veth --no-capacity --no-shared --queues 2 \
  --json "$(mktemp /tmp/ferry-bench-smoke-q2.XXXXXX.json)"
# Two devices on one shared CPU (perf/shared.sh): both must forward.
./perf/shared.sh --runs 1 --secs 2
# RFC 2544 search over memif (up to 9 one-second trials per device; 1% loss, since this
# machine's stalls decide the exact answer): each figure must be a trial within the loss.
./perf/bench --runs 1 --secs 1 --sizes 64 --no-veth --no-capacity --no-shared --search 0.01 \
  --json "$(mktemp /tmp/ferry-bench-smoke-search.XXXXXX.json)"

echo "== namespace tests (release ferryd)"
./ci/netns-tests.sh target/release/ferryd 1
./ci/netns-tests.sh target/release/ferryd 2

echo "== virtual services (real HTTP backends, health checks, every forwarding mode)"
./ci/netns-lb.sh target/release/ferryd 2

echo "== NAT against Linux nftables (the same packets through both, compared field by field)"
./ci/nat-diff.sh target/release/ferryd
