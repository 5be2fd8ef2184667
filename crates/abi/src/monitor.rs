//! The monitor's aggregation levels (`MONITOR_AGG_*` of abi.h) by name, as
//! Cilium's `MonitorAggregationLevel` spells them: the one table the agent's
//! flag, its API and the CLI read.

use crate::consts::{MONITOR_AGG_LOW, MONITOR_AGG_MAXIMUM, MONITOR_AGG_MEDIUM, MONITOR_AGG_NONE};
use std::fmt;

/// How many trace events flows emit (see `MONITOR_AGG_*` in abi.h).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Aggregation {
    /// A trace at every observation point of every packet.
    None,
    /// No receive-side (from-*) traces.
    Low,
    /// Low, and established flows only when they have news (new TCP
    /// flags, or every `MONITOR_REPORT_INTERVAL` seconds).
    #[default]
    Medium,
    /// Medium without the interval.
    Maximum,
}

/// Every level: its name and its code in `monitor_config.aggregation`.
pub const AGGREGATION_LEVELS: &[(Aggregation, &str, u32)] = &[
    (Aggregation::None, "none", MONITOR_AGG_NONE),
    (Aggregation::Low, "low", MONITOR_AGG_LOW),
    (Aggregation::Medium, "medium", MONITOR_AGG_MEDIUM),
    (Aggregation::Maximum, "maximum", MONITOR_AGG_MAXIMUM),
];

/// Cilium's other spellings of the same levels.
const ALIASES: &[(&str, Aggregation)] = &[
    ("disabled", Aggregation::None),
    ("lowest", Aggregation::Low),
    ("max", Aggregation::Maximum),
];

impl Aggregation {
    fn row(self) -> &'static (Aggregation, &'static str, u32) {
        AGGREGATION_LEVELS
            .iter()
            .find(|(a, _, _)| *a == self)
            .expect("every level is in the table")
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    pub fn code(self) -> u32 {
        self.row().2
    }

    /// The level of a code read from the map; `None` for a code this build
    /// does not know.
    pub fn from_code(code: u32) -> Option<Aggregation> {
        AGGREGATION_LEVELS
            .iter()
            .find(|(_, _, c)| *c == code)
            .map(|(a, _, _)| *a)
    }

    /// `none`, `low`, `medium`, `maximum` (any case), or Cilium's
    /// `disabled`, `lowest`, `max`.
    pub fn parse(s: &str) -> Option<Aggregation> {
        let s = s.to_ascii_lowercase();
        AGGREGATION_LEVELS
            .iter()
            .find(|(_, n, _)| *n == s)
            .map(|(a, _, _)| *a)
            .or_else(|| ALIASES.iter().find(|(n, _)| *n == s).map(|(_, a)| *a))
    }
}

/// A name that is no aggregation level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownAggregation(pub String);

impl fmt::Display for UnknownAggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is no monitor aggregation level: expected none, low, medium or maximum",
            self.0
        )
    }
}

impl std::error::Error for UnknownAggregation {}

impl std::str::FromStr for Aggregation {
    type Err = UnknownAggregation;

    fn from_str(s: &str) -> Result<Aggregation, UnknownAggregation> {
        Aggregation::parse(s).ok_or_else(|| UnknownAggregation(s.to_string()))
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_and_cilium_spellings() {
        for (a, n, c) in AGGREGATION_LEVELS {
            assert_eq!(Aggregation::parse(n), Some(*a));
            assert_eq!(Aggregation::from_code(*c), Some(*a));
            assert_eq!((a.name(), a.code()), (*n, *c));
        }
        assert_eq!(Aggregation::parse("Max"), Some(Aggregation::Maximum));
        assert_eq!(Aggregation::parse("NONE"), Some(Aggregation::None));
        assert_eq!(Aggregation::parse("lowest"), Some(Aggregation::Low));
        assert_eq!(Aggregation::parse("high"), None);
        assert_eq!(
            "high".parse::<Aggregation>().unwrap_err().to_string(),
            "\"high\" is no monitor aggregation level: expected none, low, medium or maximum"
        );
        assert_eq!(Aggregation::from_code(9), None);
        // The levels are ordered as their codes.
        assert!(Aggregation::None < Aggregation::Low && Aggregation::Medium < Aggregation::Maximum);
        assert_eq!(Aggregation::default(), Aggregation::Medium);
    }
}
