//! Conntrack garbage collection: when to run the next pass, and the
//! agent's GC thread that runs them and keeps the counts `pilus status`
//! shows (entries, passes, removals, insert failures).
//!
//! The conntrack map is a plain hash (full, it refuses new flows with a
//! counted drop), so expired entries must be removed before they crowd out
//! new flows. As Cilium does, the interval adapts to pressure: a pass that
//! found much to delete, a table filling up, or new flows refused since the
//! last pass bring the next one closer; a quiet table lets it drift out to
//! the maximum. Each completed pass is also handed to whoever watches the
//! GC (the agent's Prometheus metrics) as a [`GcRun`].

use crate::{control::ControlPlane, datapath::CtGcPass};
use std::{
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

/// Bounds and the first interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcSchedule {
    pub min: Duration,
    pub max: Duration,
    pub first: Duration,
}

impl Default for GcSchedule {
    fn default() -> Self {
        GcSchedule {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            first: Duration::from_secs(10),
        }
    }
}

/// One pass as it went: what [`ControlPlane::ct_gc_once`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcOutcome {
    /// The wait before the next pass.
    pub next: Duration,
    /// The pass's removals and time; `None` when the pass failed (the
    /// status keeps its error), so a watcher counts only real passes.
    pub run: Option<GcRun>,
}

/// A completed pass: expired entries deleted (conntrack, and masquerade's
/// NAT entries) and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcRun {
    pub deleted: u64,
    pub nat_deleted: u64,
    pub took: Duration,
}

/// What the next interval depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub pass: CtGcPass,
    pub max_entries: u64,
    /// Flows refused (table full) since the previous pass.
    pub new_failures: u64,
}

/// The wait before the next pass, from the last one's and the pressure:
/// refused flows or a table 90% full → the minimum; a quarter of the
/// entries expired, or a table over half full → half the interval; under
/// 5% expired and under a quarter full → one and a half times it; else the
/// same. Always within the bounds.
pub fn next_interval(prev: Duration, p: &Pressure, s: &GcSchedule) -> Duration {
    let remaining = p.pass.scanned.saturating_sub(p.pass.deleted);
    let fill = remaining as f64 / p.max_entries.max(1) as f64;
    let deleted = p.pass.deleted as f64 / p.pass.scanned.max(1) as f64;
    let next = if p.new_failures > 0 || fill >= 0.9 {
        s.min
    } else if deleted > 0.25 || fill > 0.5 {
        prev / 2
    } else if deleted < 0.05 && fill < 0.25 {
        prev * 3 / 2
    } else {
        prev
    };
    next.clamp(s.min, s.max)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ControlPlane {
    /// One pass now: removes expired entries, updates the counts, returns
    /// what it did and the wait before the next pass (`prev`: the current
    /// wait).
    pub fn ct_gc_once(&self, prev: Duration, schedule: &GcSchedule) -> GcOutcome {
        let started = Instant::now();
        let dp = self.dp.as_ref();
        let result = dp
            .ct_gc()
            .and_then(|pass| Ok((pass, dp.ct_max_entries()?, dp.ct_insert_failures()?)));
        let mut st = self.ct_status.lock().expect("lock");
        let s = st.get_or_insert_with(Default::default);
        let (next, deleted) = match result {
            Ok((pass, max, failures)) => {
                let p = Pressure {
                    pass,
                    max_entries: max,
                    new_failures: failures.saturating_sub(s.insert_failures),
                };
                let next = next_interval(prev, &p, schedule);
                s.entries = pass.scanned - pass.deleted;
                s.max_entries = max;
                s.gc_runs += 1;
                s.gc_deleted += pass.deleted;
                s.gc_affinity_deleted += pass.affinity_deleted;
                s.nat_entries = pass.nat_scanned - pass.nat_deleted;
                s.gc_nat_deleted += pass.nat_deleted;
                if p.new_failures > 0 {
                    tracing::warn!(
                        refused = p.new_failures,
                        entries = s.entries,
                        max_entries = max,
                        "the conntrack table was full: new flows were dropped (DROP_CT_CREATE_FAILED)"
                    );
                }
                s.insert_failures = failures;
                s.last_error = None;
                tracing::debug!(
                    scanned = pass.scanned,
                    deleted = pass.deleted,
                    next_ms = next.as_millis() as u64,
                    "conntrack GC pass"
                );
                (next, Some((pass.deleted, pass.nat_deleted)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "conntrack GC pass failed");
                s.last_error = Some(crate::Error::from(e).message());
                (schedule.min.max(prev), None)
            }
        };
        let took = started.elapsed();
        s.last_gc_unix = Some(unix_now());
        s.last_gc_ms = took.as_millis() as u64;
        s.next_gc_in_ms = next.as_millis() as u64;
        GcOutcome {
            next,
            run: deleted.map(|(deleted, nat_deleted)| GcRun {
                deleted,
                nat_deleted,
                took,
            }),
        }
    }

    /// The GC thread: passes on the adaptive schedule until the control
    /// plane is dropped; `on_run` sees every completed pass (outside the
    /// status lock, so a slow watcher delays only the next pass).
    pub fn spawn_ct_gc(
        self: &Arc<Self>,
        schedule: GcSchedule,
        on_run: impl Fn(GcRun) + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let cp = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("ct-gc".into())
            .spawn(move || {
                let mut wait = schedule.first;
                loop {
                    // Sleep in short steps so the thread ends soon after
                    // the control plane does.
                    let until = Instant::now() + wait;
                    while Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(200).min(wait));
                        if cp.strong_count() == 0 {
                            return;
                        }
                    }
                    let Some(c) = cp.upgrade() else { return };
                    let outcome = c.ct_gc_once(wait, &schedule);
                    drop(c);
                    if let Some(run) = outcome.run {
                        on_run(run);
                    }
                    wait = outcome.next;
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(scanned: u64, deleted: u64, max: u64, failures: u64) -> Pressure {
        Pressure {
            pass: CtGcPass {
                scanned,
                deleted,
                affinity_deleted: 0,
                ..Default::default()
            },
            max_entries: max,
            new_failures: failures,
        }
    }

    #[test]
    fn the_interval_follows_the_pressure() {
        let s = GcSchedule::default();
        let ten = Duration::from_secs(10);
        // Quiet: drifts out, up to the maximum.
        assert_eq!(
            next_interval(ten, &p(100, 1, 10_000, 0), &s),
            Duration::from_secs(15)
        );
        assert_eq!(
            next_interval(Duration::from_secs(50), &p(0, 0, 10_000, 0), &s),
            s.max
        );
        // Much expiring, or half full: closer.
        assert_eq!(
            next_interval(ten, &p(100, 40, 10_000, 0), &s),
            Duration::from_secs(5)
        );
        assert_eq!(
            next_interval(ten, &p(6_000, 100, 10_000, 0), &s),
            Duration::from_secs(5)
        );
        // Full, or flows refused: as soon as allowed.
        assert_eq!(next_interval(ten, &p(9_500, 0, 10_000, 0), &s), s.min);
        assert_eq!(next_interval(ten, &p(10, 0, 10_000, 3), &s), s.min);
        assert_eq!(
            next_interval(Duration::from_secs(1), &p(100, 40, 10_000, 0), &s),
            s.min
        );
        // In between: the same.
        assert_eq!(next_interval(ten, &p(3_000, 300, 10_000, 0), &s), ten);
    }
}
