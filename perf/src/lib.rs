//! Benchmarks and the packet generator (see perf/README.md).

pub mod rte_lpm;

/// The deterministic route tables the benchmarks share.
pub mod gen {
    /// xorshift64*: deterministic, so every run uses the same table and addresses.
    pub struct Rng(pub u64);

    impl Rng {
        #[allow(clippy::should_implement_trait)]
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// A BGP-like prefix length mix: mostly /24, some shorter, ~1.5% longer than /24.
    pub fn length(r: &mut Rng) -> u8 {
        match r.next() % 1000 {
            0..=579 => 24,
            580..=679 => 23,
            680..=779 => 22,
            780..=849 => 21,
            850..=909 => 20,
            910..=954 => 16 + (r.next() % 4) as u8,
            955..=984 => 8 + (r.next() % 8) as u8,
            _ => 25 + (r.next() % 8) as u8,
        }
    }
}
