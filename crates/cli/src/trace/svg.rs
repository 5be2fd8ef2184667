//! `pilus trace --svg`: the packet's life as a sequence diagram, one
//! column per place it passes (pod -> veth -> node -> tunnel -> node ->
//! pod), one row per step: an arrow when the step moves the packet, a note
//! on the column where it happens otherwise, and the verdict at the end.
//! Written by hand (a few SVG elements; no drawing library needed).

use pilus_api_types::{PacketTrace, TraceLane, TraceOutcome};
use std::fmt::Write;

const COL: i32 = 170;
const LEFT: i32 = 30;
const TOP: i32 = 60;
const HEAD: i32 = 44;
const ROW: i32 = 30;
/// Room to the right of the last column, at least.
const NOTES: i32 = 200;
/// The advance of a 12px monospace character (DejaVu Sans Mono: 0.6 em),
/// rounded up: notes run long, and the canvas must hold the longest.
const CHAR: f64 = 7.3;

/// The columns, in a packet's order; only those a trace uses are drawn,
/// and always the two ends.
const LANES: [TraceLane; 6] = [
    TraceLane::SourcePod,
    TraceLane::SourceVeth,
    TraceLane::Node,
    TraceLane::Tunnel,
    TraceLane::RemoteNode,
    TraceLane::DestinationPod,
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn title(t: &PacketTrace, lane: TraceLane) -> (String, String) {
    let pod = |p: &pilus_api_types::TracePeer| match &p.pod {
        Some(n) => (format!("pod {n}"), p.ip.to_string()),
        None => (p.ip.to_string(), "destination".into()),
    };
    match lane {
        TraceLane::SourcePod => pod(&t.from),
        TraceLane::SourceVeth => ("host veth".into(), "from-container".into()),
        TraceLane::Node => (format!("node {}", t.node), "stack".into()),
        TraceLane::Tunnel => ("tunnel".into(), "VXLAN".into()),
        TraceLane::RemoteNode => (
            t.verdict
                .node
                .clone()
                .or_else(|| t.verdict.tunnel_endpoint.map(|ip| ip.to_string()))
                .unwrap_or_else(|| "remote node".into()),
            match t.verdict.outcome {
                TraceOutcome::Stack => "from-netdev".into(),
                _ => "from-overlay".into(),
            },
        ),
        TraceLane::DestinationPod => match (&t.to.pod, &t.verdict.node) {
            // A pod of another node: the local agent knows its address only.
            (None, Some(node)) => (t.to.ip.to_string(), format!("on {node}")),
            _ => pod(&t.to),
        },
    }
}

/// The diagram of a trace, as a standalone SVG document.
pub fn render(t: &PacketTrace) -> String {
    let used: Vec<TraceLane> = LANES
        .into_iter()
        .filter(|l| {
            matches!(l, TraceLane::SourcePod | TraceLane::DestinationPod)
                || t.steps
                    .iter()
                    .any(|s| s.lane == *l || s.to_lane == Some(*l))
        })
        .collect();
    let x = |l: TraceLane| {
        let i = used.iter().position(|u| *u == l).unwrap_or(0) as i32;
        LEFT + COL / 2 + i * COL
    };
    let rows = t.steps.len() as i32 + 1;
    // Every label starts a little right of its column (or its arrow's left
    // end) and must fit.
    let longest = t
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let start = x(s.lane).min(s.to_lane.map_or(i32::MAX, x)) + 10;
            let chars = format!("{}. {}", i + 1, s.text).chars().count();
            start + (chars as f64 * CHAR).ceil() as i32
        })
        .max()
        .unwrap_or(0);
    let width = (LEFT * 2 + COL * used.len() as i32 + NOTES).max(longest + LEFT);
    let bottom = TOP + HEAD + 20 + rows * ROW;
    let height = bottom + 30;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="12">"#
    );
    s.push_str(
        r##"<defs><marker id="arrow" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#333"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
"##,
    );
    let port = t.dport.map(|p| format!(":{p}")).unwrap_or_default();
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="28" font-size="15" font-weight="bold">pilus trace: {} {} -&gt; {}{port} (node {})</text>"#,
        esc(&t.proto),
        t.from.ip,
        t.to.ip,
        esc(&t.node)
    );
    for l in &used {
        let (name, sub) = title(t, *l);
        let cx = x(*l);
        let _ = writeln!(
            s,
            r##"<rect x="{}" y="{TOP}" width="{}" height="{HEAD}" rx="6" fill="#eef3fb" stroke="#335"/><text x="{cx}" y="{}" text-anchor="middle" font-weight="bold">{}</text><text x="{cx}" y="{}" text-anchor="middle" fill="#555">{}</text><line x1="{cx}" y1="{}" x2="{cx}" y2="{bottom}" stroke="#99a" stroke-dasharray="4,4"/>"##,
            cx - COL / 2 + 8,
            COL - 16,
            TOP + 18,
            esc(&name),
            TOP + 36,
            esc(&sub),
            TOP + HEAD
        );
    }
    let mut y = TOP + HEAD + 20;
    for (i, step) in t.steps.iter().enumerate() {
        y += ROW;
        let label = format!("{}. {}", i + 1, step.text);
        match step.to_lane {
            Some(to) if to != step.lane => {
                let (x1, x2) = (x(step.lane), x(to));
                let _ = writeln!(
                    s,
                    r##"<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#333" stroke-width="1.5" marker-end="url(#arrow)"/><text x="{}" y="{}">{}</text>"##,
                    x1.min(x2) + 6,
                    y - 6,
                    esc(&label)
                );
            }
            _ => {
                let cx = x(step.lane);
                let color = if step.text.starts_with("dropped") {
                    "#c00"
                } else {
                    "#333"
                };
                let _ = writeln!(
                    s,
                    r##"<circle cx="{cx}" cy="{}" r="3" fill="{color}"/><text x="{}" y="{}" fill="{color}">{}</text>"##,
                    y - 4,
                    cx + 10,
                    y,
                    esc(&label)
                );
            }
        }
    }
    y += ROW;
    let (mark, color) = match t.verdict.outcome {
        TraceOutcome::Dropped => ("\u{2717}", "#c00"),
        _ => ("\u{2713}", "#070"),
    };
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{y}" font-size="14" font-weight="bold" fill="{color}">{mark} {}</text>"#,
        esc(&t.verdict.summary)
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::tests::sample;

    #[test]
    fn delivered_draws_both_pods_and_the_arrows_between_them() {
        let svg = render(&sample(TraceOutcome::Delivered));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">pod shop/client<"));
        assert!(svg.contains(">pod shop/web<"));
        assert!(svg.contains(">host veth<"));
        // No node, tunnel or remote node column: the packet never went there.
        assert!(!svg.contains(">tunnel<"));
        assert!(!svg.contains(">node node-1<"));
        // Two arrows: pod -> veth, veth -> peer.
        assert_eq!(svg.matches("marker-end=").count(), 2);
        assert!(svg.contains("\u{2713} delivered to pod shop/web"));
    }

    #[test]
    fn the_canvas_holds_the_longest_note() {
        let mut t = sample(TraceOutcome::Delivered);
        t.steps[1].text = "x".repeat(400);
        let svg = render(&t);
        let width: i32 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .and_then(|w| w.parse().ok())
            .unwrap();
        assert!(width as f64 >= 400.0 * CHAR, "width {width}");
    }

    #[test]
    fn tunnel_goes_through_every_column_and_drops_are_red() {
        let svg = render(&sample(TraceOutcome::Tunnel));
        for col in [">tunnel<", ">remote node<", ">host veth<"] {
            assert!(svg.contains(col), "{col}");
        }
        assert!(svg.contains("to node-2 via tunnel"));

        let svg = render(&sample(TraceOutcome::Dropped));
        // Text is escaped, so the document stays well-formed.
        assert!(svg.contains("dropped: Policy denied &lt;by&gt; &quot;x&quot; &amp; y"));
        assert!(svg.contains("fill=\"#c00\">\u{2717} dropped: Policy denied"));
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    }
}
