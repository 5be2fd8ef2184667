//! The conntrack clock: jiffies divided by the kernel's tick rate, i.e.
//! seconds since (about) boot on the kernel's tick. The datapath reads it
//! with bpf_jiffies64(), the cheapest clock a program has (a ktime read costs
//! ~37 ns per packet on this VM, the coarse ktime ~12 ns more than jiffies).
//! Userspace reads jiffies from /proc/timer_list, as Cilium does, and measures
//! HZ once, since no interface reports CONFIG_HZ.

use crate::Error;
use std::time::Duration;

const TIMER_LIST: &str = "/proc/timer_list";

fn read_sample() -> Result<(u64, u64), Error> {
    let text = std::fs::read_to_string(TIMER_LIST).map_err(|source| Error::Syscall {
        call: "read /proc/timer_list",
        source,
    })?;
    let field = |prefix: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    match (field("now at "), field("jiffies: ")) {
        (Some(now_ns), Some(jiffies)) => Ok((now_ns, jiffies)),
        _ => Err(Error::Syscall {
            call: "parse /proc/timer_list",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no 'now at' or 'jiffies:' line",
            ),
        }),
    }
}

/// The kernel's jiffies counter now.
pub fn jiffies() -> Result<u64, Error> {
    Ok(read_sample()?.1)
}

/// CONFIG_HZ, measured: jiffies advanced over 60 ms of monotonic time, snapped
/// to the rates a kernel can be built with.
pub fn kernel_hz() -> Result<u32, Error> {
    let (t0, j0) = read_sample()?;
    std::thread::sleep(Duration::from_millis(60));
    let (t1, j1) = read_sample()?;
    let rate = (j1 - j0) as f64 / ((t1 - t0) as f64 / 1e9);
    Ok(snap_hz(rate))
}

fn snap_hz(rate: f64) -> u32 {
    [100u32, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (f64::from(*a) - rate)
                .abs()
                .total_cmp(&(f64::from(*b) - rate).abs())
        })
        .expect("non-empty")
}

/// Conntrack "now" for a kernel of tick rate `hz`.
pub fn ct_now(hz: u32) -> Result<u32, Error> {
    Ok((jiffies()? / u64::from(hz.max(1))) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_rates_snap_to_kernel_hz_values() {
        assert_eq!(snap_hz(998.7), 1000);
        assert_eq!(snap_hz(251.0), 250);
        assert_eq!(snap_hz(310.0), 300);
        assert_eq!(snap_hz(101.0), 100);
    }
}
