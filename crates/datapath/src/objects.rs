//! The BPF objects build.rs compiled from bpf/*.c, embedded in the binary.

/// bpf/bpf_lxc.c: the pod veth programs.
pub static BPF_LXC: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_lxc.o"));

/// bpf/bpf_overlay.c: the VXLAN device's program (tunnel mode).
pub static BPF_OVERLAY: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_overlay.o"));

/// bpf/bpf_host.c: the uplink's programs (direct routing).
pub static BPF_HOST: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_host.o"));

/// bpf/bpf_xdp.c: the XDP prefilter on the uplink.
pub static BPF_XDP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_xdp.o"));

/// bpf/bpf_sock.c: socket-level service LB (cgroup connect4 and friends).
pub static BPF_SOCK: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf_sock.o"));

/// bpf/abi_layout.c: one instance of every shared struct, for the layout test
/// and the layout hash of the pins' ABI stamp (never loaded).
pub static ABI_LAYOUT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/abi_layout.o"));

/// bpf/bench_empty.c: the empty classifier, the benchmark's floor.
pub static BENCH_EMPTY: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_empty.o"));
