//! What the benchmarks share: the latency summary of a set of samples,
//! and the readings of a process from `/proc` (resident memory, threads,
//! open descriptors).

use crate::Error;
use serde::Serialize;
use std::time::Duration;

/// Percentiles of a set of samples, in milliseconds (nearest rank).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Latency {
    pub runs: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// The summary of `samples`; `None` when there are none.
    pub fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| ms(samples[((samples.len() as f64 - 1.0) * q).round() as usize]);
        Some(Latency {
            runs: samples.len(),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: ms(*samples.last()?),
        })
    }
}

/// A numeric field of `/proc/<pid>/status` (`VmRSS` in KiB, `Threads`).
pub fn proc_status(pid: u32, field: &str) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        what: format!("reading {path}"),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| Error::Unexpected {
            what: format!("no numeric {field} in {path}"),
        })
}

/// The resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, Error> {
    proc_status(pid, "VmRSS")
}

/// The threads of a process.
pub fn threads(pid: u32) -> Result<u64, Error> {
    proc_status(pid, "Threads")
}

/// The open file descriptors of a process (sockets included).
pub fn open_fds(pid: u32) -> Result<usize, Error> {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .map(|d| d.count())
        .map_err(|source| Error::Io {
            what: format!("listing {path}"),
            source,
        })
}

/// Rounds to `digits` decimals, for reports read by people and scripts.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::of(v).unwrap();
        assert_eq!(l.runs, 100);
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (51.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(Vec::new()), None);
        let one = Latency::of(vec![Duration::from_micros(250)]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (0.25, 0.25));
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(threads(me).unwrap() >= 1);
        assert!(open_fds(me).unwrap() >= 3);
        assert!(proc_status(me, "NoSuchField").is_err());
    }
}
