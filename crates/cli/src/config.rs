//! `pilus config`: the agent's run-time settings, as `cilium config` shows
//! and changes them: the monitor's aggregation level, debug messages and
//! packet captures (`GET`/`PUT /v1/monitor/config`). Applied at once: the
//! datapath reads them on its next packet.

use crate::{client::InvalidInput, table::print_json, Output};
use anyhow::Result;
use pilus_api_types::{paths, MonitorConfig, MonitorConfigUpdate};
use pilus_client::blocking::Client;

/// Each setting's names, as Cilium spells it and in Pilus's flag form.
const KEYS: &[(&str, &str)] = &[
    ("MonitorAggregationLevel", "monitor-aggregation"),
    ("Debug", "debug"),
    ("Capture", "capture"),
];

fn bool_of(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "enabled" | "on" | "1" => Ok(true),
        "false" | "disabled" | "off" | "0" => Ok(false),
        _ => Err(InvalidInput(format!("{key}={v}: expected true or false")).into()),
    }
}

/// `KEY=VALUE` settings into one update; an unknown key or value is
/// refused before anything is sent.
pub fn parse(settings: &[String]) -> Result<MonitorConfigUpdate> {
    let mut u = MonitorConfigUpdate::default();
    for s in settings {
        let Some((k, v)) = s.split_once('=') else {
            return Err(InvalidInput(format!("{s:?}: expected KEY=VALUE")).into());
        };
        let key = KEYS
            .iter()
            .find(|(cilium, flag)| k.eq_ignore_ascii_case(cilium) || k.eq_ignore_ascii_case(flag))
            .map(|(cilium, _)| *cilium)
            .ok_or_else(|| {
                let known: Vec<&str> = KEYS.iter().map(|(c, _)| *c).collect();
                InvalidInput(format!(
                    "{k:?}: unknown setting (known: {})",
                    known.join(", ")
                ))
            })?;
        match key {
            "MonitorAggregationLevel" => u.aggregation = Some(v.to_string()),
            "Debug" => u.debug = Some(bool_of(k, v)?),
            _ => u.capture = Some(bool_of(k, v)?),
        }
    }
    Ok(u)
}

fn print(c: &MonitorConfig, out: Output) -> Result<()> {
    if out == Output::Json {
        return print_json(c);
    }
    let on = |b: bool| if b { "Enabled" } else { "Disabled" };
    println!("{:<26}{}", "MonitorAggregationLevel", c.aggregation);
    println!("{:<26}{}", "Debug", on(c.debug));
    println!("{:<26}{}", "Capture", on(c.capture));
    Ok(())
}

pub fn run(c: &Client, settings: Vec<String>, out: Output) -> Result<()> {
    if settings.is_empty() {
        let now: MonitorConfig = c.get_json(paths::MONITOR_CONFIG)?;
        return print(&now, out);
    }
    let update = parse(&settings)?;
    let now: MonitorConfig = c.post_json(paths::MONITOR_CONFIG, &update)?;
    print(&now, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cilium_and_flag_spellings_and_refusals() {
        let u = parse(&[
            "MonitorAggregationLevel=None".into(),
            "debug=true".into(),
            "CAPTURE=disabled".into(),
        ])
        .unwrap();
        assert_eq!(
            u,
            MonitorConfigUpdate {
                aggregation: Some("None".into()),
                debug: Some(true),
                capture: Some(false)
            }
        );
        let u = parse(&["monitor-aggregation=medium".into()]).unwrap();
        assert_eq!(u.aggregation.as_deref(), Some("medium"));
        for bad in ["debug", "debug=maybe", "Color=blue"] {
            assert!(parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
