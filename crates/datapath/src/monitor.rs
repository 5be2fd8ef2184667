//! The monitor's side of the maps: its run-time settings (`pilus_monconf`:
//! aggregation level, debug, capture), changed without reloading anything,
//! and the ring buffer's per-CPU counters (`pilus_evstats`: records
//! submitted and lost). The map accessors are in `maps`.

use pilus_abi::{
    consts::{MONITOR_F_CAPTURE, MONITOR_F_DEBUG},
    Aggregation, EventStats, MonitorConfig,
};

/// What the datapath reports, set at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorSettings {
    pub aggregation: Aggregation,
    /// Debug messages (`EVENT_DEBUG`).
    pub debug: bool,
    /// Captures of delivered packets (`EVENT_CAPTURE`).
    pub capture: bool,
}

impl MonitorSettings {
    pub fn to_abi(self) -> MonitorConfig {
        let mut flags = 0;
        if self.debug {
            flags |= MONITOR_F_DEBUG;
        }
        if self.capture {
            flags |= MONITOR_F_CAPTURE;
        }
        MonitorConfig {
            aggregation: self.aggregation.code(),
            flags,
        }
    }

    /// The settings a map holds; a level this build does not know reads as
    /// the maximum, which is what the programs do with it.
    pub fn from_abi(c: MonitorConfig) -> MonitorSettings {
        MonitorSettings {
            aggregation: Aggregation::from_code(c.aggregation).unwrap_or(Aggregation::Maximum),
            debug: c.flags & MONITOR_F_DEBUG != 0,
            capture: c.flags & MONITOR_F_CAPTURE != 0,
        }
    }
}

/// The per-CPU counters summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventTotals {
    pub submitted: u64,
    pub lost: u64,
}

/// Sums per-CPU counters.
pub fn totals(per_cpu: &[EventStats]) -> EventTotals {
    per_cpu
        .iter()
        .fold(EventTotals::default(), |t, s| EventTotals {
            submitted: t.submitted + s.submitted,
            lost: t.lost + s.lost,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_map_value() {
        for aggregation in [Aggregation::None, Aggregation::Maximum] {
            for (debug, capture) in [(false, false), (true, false), (false, true), (true, true)] {
                let s = MonitorSettings {
                    aggregation,
                    debug,
                    capture,
                };
                assert_eq!(MonitorSettings::from_abi(s.to_abi()), s);
            }
        }
        let odd = MonitorConfig {
            aggregation: 77,
            flags: 0,
        };
        assert_eq!(
            MonitorSettings::from_abi(odd).aggregation,
            Aggregation::Maximum
        );
        assert_eq!(
            totals(&[
                EventStats {
                    submitted: 3,
                    lost: 1
                },
                EventStats {
                    submitted: 4,
                    lost: 2
                }
            ]),
            EventTotals {
                submitted: 7,
                lost: 3
            }
        );
    }
}
