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

echo "== namespace tests (release ferryd)"
cargo build --release --bin ferryd
./ci/netns-tests.sh target/release/ferryd 1
./ci/netns-tests.sh target/release/ferryd 2

