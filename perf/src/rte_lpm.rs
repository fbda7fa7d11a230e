//! DPDK's own `rte_lpm` and `rte_lpm6`, wrapped for the comparison benchmarks
//! (`benches/lpm.rs`); never used by ferryd. Needs the EAL.

use std::ffi::CString;
use std::ptr::NonNull;

use ferry_dataplane::dpdk::{last_error, strerror, DpdkError};
use ferry_ffi as ffi;

/// DPDK's own `rte_lpm`, for comparison benchmarks. Needs the EAL.
pub struct DpdkLpm {
    raw: NonNull<ffi::rte_lpm>,
}

impl DpdkLpm {
    pub fn new(name: &str, max_rules: u32, tbl8s: u32) -> Result<DpdkLpm, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::Nul(name.to_string()))?;
        let cfg = ffi::rte_lpm_config {
            max_rules,
            number_tbl8s: tbl8s,
            flags: 0,
        };
        // SAFETY: valid name and config pointers.
        let raw = unsafe { ffi::rte_lpm_create(c.as_ptr(), -1, &cfg) };
        NonNull::new(raw)
            .map(|raw| DpdkLpm { raw })
            .ok_or_else(|| DpdkError::Lpm(format!("create {name}: {}", last_error())))
    }

    pub fn add(&mut self, ip: u32, depth: u8, next_hop: u32) -> Result<(), DpdkError> {
        // SAFETY: raw is live and uniquely borrowed.
        let rc = unsafe { ffi::rte_lpm_add(self.raw.as_ptr(), ip, depth, next_hop) };
        if rc < 0 {
            return Err(DpdkError::Lpm(format!(
                "add {ip:#x}/{depth}: {}",
                strerror(rc)
            )));
        }
        Ok(())
    }

    #[inline]
    pub fn lookup(&self, ip: u32) -> Option<u32> {
        let mut nh = 0u32;
        // SAFETY: raw is live; nh is a valid out pointer.
        let rc = unsafe { ffi::ferry_lpm_lookup(self.raw.as_ptr(), ip, &mut nh) };
        (rc == 0).then_some(nh)
    }

    /// rte_lpm_lookupx4 over `ips` in fours (the tail with single lookups); misses give `miss`.
    #[inline]
    pub fn lookup_x4(&self, ips: &[u32], out: &mut [u32], miss: u32) {
        let n = ips.len().min(out.len());
        let mut i = 0;
        while i + 4 <= n {
            // SAFETY: ips[i..i+4] and out[i..i+4] are in bounds; raw is live.
            unsafe {
                ffi::ferry_lpm_lookupx4(
                    self.raw.as_ptr(),
                    ips.as_ptr().add(i),
                    out.as_mut_ptr().add(i),
                    miss,
                )
            };
            i += 4;
        }
        while i < n {
            out[i] = self.lookup(ips[i]).unwrap_or(miss);
            i += 1;
        }
    }
}

impl Drop for DpdkLpm {
    fn drop(&mut self) {
        // SAFETY: raw is ours and freed once.
        unsafe { ffi::rte_lpm_free(self.raw.as_ptr()) };
    }
}

/// DPDK's own `rte_lpm6`, for comparison benchmarks. Needs the EAL.
pub struct DpdkLpm6 {
    raw: NonNull<ffi::rte_lpm6>,
}

impl DpdkLpm6 {
    pub fn new(name: &str, max_rules: u32, tbl8s: u32) -> Result<DpdkLpm6, DpdkError> {
        let c = CString::new(name).map_err(|_| DpdkError::Nul(name.to_string()))?;
        let cfg = ffi::rte_lpm6_config {
            max_rules,
            number_tbl8s: tbl8s,
            flags: 0,
        };
        // SAFETY: valid name and config pointers.
        let raw = unsafe { ffi::rte_lpm6_create(c.as_ptr(), -1, &cfg) };
        NonNull::new(raw)
            .map(|raw| DpdkLpm6 { raw })
            .ok_or_else(|| DpdkError::Lpm(format!("create {name}: {}", last_error())))
    }

    pub fn add(&mut self, ip: u128, depth: u8, next_hop: u32) -> Result<(), DpdkError> {
        let bytes = ip.to_be_bytes();
        // SAFETY: raw is live and uniquely borrowed; bytes is 16 bytes as rte_lpm6 reads.
        let rc = unsafe { ffi::rte_lpm6_add(self.raw.as_ptr(), bytes.as_ptr(), depth, next_hop) };
        if rc < 0 {
            return Err(DpdkError::Lpm(format!("add6 /{depth}: {}", strerror(rc))));
        }
        Ok(())
    }

    /// rte_lpm6_lookup_bulk_func over `ips` (16-byte addresses); misses give -1.
    pub fn lookup_bulk(&self, ips: &mut [[u8; 16]], out: &mut [i32]) {
        let n = ips.len().min(out.len());
        // SAFETY: ips and out hold at least n entries; raw is live; DPDK only reads ips.
        unsafe {
            ffi::rte_lpm6_lookup_bulk_func(
                self.raw.as_ptr(),
                ips.as_mut_ptr(),
                out.as_mut_ptr(),
                n as u32,
            )
        };
    }
}

impl Drop for DpdkLpm6 {
    fn drop(&mut self) {
        // SAFETY: raw is ours and freed once.
        unsafe { ffi::rte_lpm6_free(self.raw.as_ptr()) };
    }
}
