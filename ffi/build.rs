//! Finds the system DPDK with pkg-config, compiles the C shim and generates bindings.
use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .cargo_metadata(true)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "DPDK 22.11+ not found through pkg-config ({e}); on Debian 12: \
             apt-get install dpdk-dev libdpdk-dev pkg-config"
        ),
    };
    // Pass `pkg-config --cflags libdpdk` unchanged to cc and bindgen: it carries
    // `-include rte_config.h -march=corei7`.
    let cflags = String::from_utf8(
        std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .expect("run pkg-config --cflags libdpdk")
            .stdout,
    )
    .expect("pkg-config output is UTF-8");
    let cflags: Vec<&str> = cflags.split_whitespace().collect();

    let mut build = cc::Build::new();
    build.file("shim.c").opt_level(3).warnings(false);
    for f in &cflags {
        build.flag(f);
    }
    for inc in &dpdk.include_paths {
        build.include(inc);
    }
    build.compile("ferry_shim");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(cflags.iter().copied())
        .clang_arg("-I.")
        .allowlist_function("rte_eal_init|rte_eal_cleanup|rte_eal_remote_launch|rte_eal_wait_lcore|rte_eal_mp_wait_lcore")
        .allowlist_function("rte_get_main_lcore|rte_lcore_count|rte_get_next_lcore|rte_socket_id|rte_lcore_to_socket_id|rte_thread_register|rte_get_tsc_hz|rte_strerror|rte_dev_probe|rte_dev_remove")
        .allowlist_function("rte_pktmbuf_pool_create|rte_mempool_free|rte_mempool_avail_count|rte_mempool_in_use_count")
        .allowlist_function("rte_eth_dev_count_avail|rte_eth_dev_get_port_by_name|rte_eth_dev_configure|rte_eth_dev_info_get|rte_eth_rx_queue_setup|rte_eth_tx_queue_setup|rte_eth_dev_start|rte_eth_dev_stop|rte_eth_dev_close|rte_eth_macaddr_get|rte_eth_link_get_nowait|rte_eth_stats_get|rte_eth_stats_reset|rte_eth_promiscuous_enable|rte_eth_dev_set_mtu|rte_eth_dev_get_mtu|rte_eth_dev_socket_id|rte_eth_allmulticast_enable|rte_eth_dev_adjust_nb_rx_tx_desc")
        .allowlist_function("rte_ring_create|rte_ring_free")
        .allowlist_function("rte_lpm_create|rte_lpm_add|rte_lpm_free|rte_lpm6_create|rte_lpm6_add|rte_lpm6_lookup|rte_lpm6_lookup_bulk_func|rte_lpm6_free|rte_fib_create|rte_fib_add|rte_fib_free|rte_fib_lookup_bulk")
        .allowlist_function("ferry_.*")
        .allowlist_var("ferry_.*|RTE_MAX_LCORE|RTE_MAX_ETHPORTS|RTE_ETHER_ADDR_LEN|SOCKET_ID_ANY|RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_type("rte_mbuf|rte_mempool|rte_eth_conf|rte_eth_dev_info|rte_eth_rxconf|rte_eth_txconf|rte_ether_addr|rte_eth_link|rte_eth_stats|rte_ring|rte_lpm|rte_lpm_config|rte_lpm6|rte_lpm6_config|rte_fib|rte_fib_conf|lcore_function_t")
        .opaque_type("rte_arp_hdr|rte_arp_ipv4|rte_gtp_psc_generic_hdr|rte_l2tpv2_combined_msg_hdr|rte_mempool|rte_ring|rte_lpm|rte_lpm6|rte_fib")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over the DPDK headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("write bindings.rs");
}
