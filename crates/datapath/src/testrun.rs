//! BPF_PROG_TEST_RUN for the tc programs: a packet in, the verdict, the packet
//! out and the kernel's time per run. Used by the tier-2 tests and the benchmark.

use crate::Error;
use aya::programs::{ProgramError, TestRunOptions, TestRunResult};

/// tc verdicts (linux/pkt_cls.h).
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;

/// The name of a tc verdict, for test messages.
pub fn verdict_name(v: i32) -> &'static str {
    match v {
        TC_ACT_OK => "TC_ACT_OK",
        TC_ACT_SHOT => "TC_ACT_SHOT",
        TC_ACT_REDIRECT => "TC_ACT_REDIRECT",
        -1 => "TC_ACT_UNSPEC",
        _ => "other",
    }
}

/// What one run returned.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub verdict: i32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
    /// Mean time per run, as the kernel measured it.
    pub ns_per_run: u64,
}

/// Size of `struct __sk_buff` in the UAPI this was written against, and the
/// offset of `ifindex` in it. The kernel accepts a shorter ctx_in and requires
/// every field it does not support to be zero.
const SKB_CTX_LEN: usize = 192;
const SKB_IFINDEX_OFF: usize = 40;

/// Room for what a program may add to a packet (none of ours grows one yet).
const OUT_HEADROOM: usize = 256;

pub(crate) fn run(
    f: impl FnOnce(TestRunOptions<'_>) -> Result<TestRunResult, ProgramError>,
    name: &'static str,
    ifindex: u32,
    packet: &[u8],
    repeat: u32,
) -> Result<Outcome, Error> {
    let mut ctx = [0u8; SKB_CTX_LEN];
    // The kernel resolves ctx.ifindex to a device of the caller's network
    // namespace (ENODEV otherwise); the program reads it as skb->ifindex.
    ctx[SKB_IFINDEX_OFF..SKB_IFINDEX_OFF + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; packet.len() + OUT_HEADROOM];
    let res = f(TestRunOptions {
        data_in: Some(packet),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat: repeat.max(1),
        ..Default::default()
    })
    .map_err(|e| Error::program(name, e))?;
    out.truncate(res.data_size_out as usize);
    Ok(Outcome {
        verdict: res.return_value as i32,
        packet: out,
        ns_per_run: res.duration.as_nanos() as u64,
    })
}

/// The empty classifier of bpf/bench_empty.c: the cost of BPF_PROG_TEST_RUN
/// and a tc program that does nothing, measured beside the real programs.
pub struct Floor {
    ebpf: aya::Ebpf,
}

impl Floor {
    pub fn load() -> Result<Floor, Error> {
        let mut ebpf = aya::Ebpf::load(crate::objects::BENCH_EMPTY).map_err(|e| Error::Load {
            object: "bench_empty.o",
            source: Box::new(e),
        })?;
        let prog: &mut aya::programs::SchedClassifier = ebpf
            .program_mut("empty")
            .ok_or(Error::MissingProgram { name: "empty" })?
            .try_into()
            .map_err(|e| Error::program("empty", e))?;
        prog.load().map_err(|e| Error::program("empty", e))?;
        Ok(Floor { ebpf })
    }

    pub fn test_run(&self, ifindex: u32, packet: &[u8], repeat: u32) -> Result<Outcome, Error> {
        use aya::programs::TestRun;
        let prog: &aya::programs::SchedClassifier = self
            .ebpf
            .program("empty")
            .ok_or(Error::MissingProgram { name: "empty" })?
            .try_into()
            .map_err(|e| Error::program("empty", e))?;
        run(|opts| prog.test_run(opts), "empty", ifindex, packet, repeat)
    }
}
