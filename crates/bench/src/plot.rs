//! The plots of a traffic report, as SVG text (plotters, SVG backend
//! only): the latency distribution of every request/response test per
//! topology, and the scaling series (policy entries, endpoints) as the
//! ratio to bare of the same round. Pure: the caller writes the files.

use crate::{
    load::Test,
    traffic::{Config, Group, Report, Topology},
    Error,
};
use plotters::prelude::*;

/// One plot: its file name and its SVG.
pub struct Svg {
    pub name: String,
    pub text: String,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(127, 127, 127),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

fn color(c: Config) -> RGBColor {
    match c {
        Config::Bare => COLORS[0],
        Config::BareAgain => COLORS[1],
        Config::Pilus => COLORS[2],
        Config::Iptables => COLORS[3],
    }
}

fn plot_err<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Plot {
        what: what.to_string(),
        source: Box::new(e),
    }
}

/// The file name of a group's latency plot.
pub fn latency_name(t: Topology, test: Test) -> String {
    format!("latency-{}-{}.svg", t.name(), test.name().to_lowercase())
}

/// Every plot of the report: a latency distribution per request/response
/// group of the main phase, and one per scaling series run.
pub fn all(r: &Report) -> Result<Vec<Svg>, Error> {
    let mut v = Vec::new();
    if let Some(main) = r.phase("main") {
        for g in main.groups.iter().filter(|g| g.test.has_latency()) {
            v.push(Svg {
                name: latency_name(g.topology, g.test),
                text: latency(g, &r.cdf_points)?,
            });
        }
    }
    if let Some(text) = services(r)? {
        v.push(Svg {
            name: "scaling-services.svg".into(),
            text,
        });
    }
    for series in ["policy", "endpoints"] {
        if let Some(text) = scaling(r, series)? {
            v.push(Svg {
                name: format!("scaling-{series}.svg"),
                text,
            });
        }
    }
    Ok(v)
}

/// The latency distribution (CDF, log µs) of each configuration.
pub fn latency(g: &Group, points: &[f64]) -> Result<String, Error> {
    let what = "drawing a latency plot";
    let values = || g.rows.iter().flat_map(|r| r.cdf_us.iter().copied());
    let lo = values().fold(f64::INFINITY, f64::min).max(0.1);
    let hi = values().fold(0.0, f64::max).max(lo * 2.0);
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (760, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(what))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: {} latency", g.topology.title(), g.test.name()),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0f64..100f64)
            .map_err(plot_err(what))?;
        chart
            .configure_mesh()
            .x_desc("latency per transaction, µs (log scale)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("percentile")
            .draw()
            .map_err(plot_err(what))?;
        for row in &g.rows {
            let c = color(row.config);
            let line = row
                .cdf_us
                .iter()
                .zip(points)
                .map(|(&x, &p)| (x.max(lo), p * 100.0));
            chart
                .draw_series(LineSeries::new(line, c.stroke_width(2)))
                .map_err(plot_err(what))?
                .label(row.config.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_err(what))?;
        root.present().map_err(plot_err(what))?;
    }
    Ok(text)
}

/// The ratio to bare of pilus and iptables for each scaling test, at the
/// main phase's size and at the series' (`None`: the series was not run).
pub fn scaling(r: &Report, series: &str) -> Result<Option<String>, Error> {
    let (Some(main), Some(big)) = (r.phase("main"), r.phase(series)) else {
        return Ok(None);
    };
    let size = |p: &crate::traffic::Phase| match series {
        "policy" => p.policy_entries as f64,
        _ => p.endpoints as f64,
    };
    let mut lines = Vec::new();
    for g in &big.groups {
        let Some(g0) = main
            .groups
            .iter()
            .find(|x| x.topology == g.topology && x.test == g.test)
        else {
            continue;
        };
        for c in [Config::Pilus, Config::Iptables] {
            if let (Some(a), Some(b)) = (g0.row(c), g.row(c)) {
                lines.push((
                    format!("{} {}", c.name(), g.test.name()),
                    c,
                    g.test,
                    [(size(main), a.ratio.median), (size(big), b.ratio.median)],
                ));
            }
        }
    }
    let (x_lo, x_hi) = (size(main).max(1.0), size(big).max(size(main) * 2.0));
    let x_desc = match series {
        "policy" => "policy entries of the server (log scale)",
        _ => "endpoints on the node (log scale)",
    };
    let lines = lines
        .into_iter()
        .map(|(label, c, test, pts)| (label, c, test, pts.to_vec()))
        .collect();
    ratio_chart(
        &format!("same node, rate / bare vs. {series}"),
        x_desc,
        (x_lo, x_hi),
        lines,
        Test::TcpRr,
    )
    .map(Some)
}

/// A line: its label, configuration, test and (x, y) points.
type Line = (String, Config, Test, Points);

/// Rate over bare (y) against a size (x, log scale), a line per
/// configuration and test (`bold`'s drawn thicker), bare at 1.00.
fn ratio_chart(
    caption: &str,
    x_desc: &str,
    (x_lo, x_hi): (f64, f64),
    lines: Vec<Line>,
    bold: Test,
) -> Result<String, Error> {
    let ys = lines.iter().flat_map(|l| l.3.iter().map(|p| p.1));
    let y_lo = (ys.clone().fold(0.9f64, f64::min) - 0.05).max(0.0);
    let y_hi = ys.fold(1.1f64, f64::max) + 0.05;
    let what = "drawing a scaling plot";
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (760, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(what))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((x_lo * 0.8..x_hi * 1.25).log_scale(), y_lo..y_hi)
            .map_err(plot_err(what))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("rate / bare (same round)")
            .draw()
            .map_err(plot_err(what))?;
        chart
            .draw_series(LineSeries::new(
                [(x_lo * 0.8, 1.0), (x_hi * 1.25, 1.0)],
                COLORS[0].stroke_width(1),
            ))
            .map_err(plot_err(what))?
            .label("bare")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], COLORS[0]));
        for (label, c, test, pts) in lines {
            let col = color(c);
            let style = if test == bold {
                col.stroke_width(2)
            } else {
                col.stroke_width(1)
            };
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(plot_err(what))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, col.filled())))
                .map_err(plot_err(what))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(plot_err(what))?;
        root.present().map_err(plot_err(what))?;
    }
    Ok(text)
}

/// A line's (x, y) points.
type Points = Vec<(f64, f64)>;

/// The service series: pilus's and iptables's rate over bare (same
/// rounds) for each test against the number of services (`None`: the
/// series was not run).
pub fn services(r: &Report) -> Result<Option<String>, Error> {
    let phases: Vec<_> = r.phases.iter().filter(|p| p.name == "services").collect();
    if phases.is_empty() {
        return Ok(None);
    }
    let mut lines: Vec<Line> = Vec::new();
    for g in &phases[0].groups {
        for c in [Config::Pilus, Config::Iptables] {
            let pts: Vec<(f64, f64)> = phases
                .iter()
                .filter_map(|p| {
                    let row = p.groups.iter().find(|x| x.test == g.test)?.row(c)?;
                    Some((p.services as f64, row.ratio.median))
                })
                .collect();
            lines.push((format!("{} {}", c.name(), g.test.name()), c, g.test, pts));
        }
    }
    let x_lo = phases[0].services.max(1) as f64;
    let x_hi = (phases[phases.len() - 1].services as f64).max(x_lo * 10.0);
    ratio_chart(
        "pod to service, rate / bare pod to pod vs. services",
        "services (log scale)",
        (x_lo, x_hi),
        lines,
        Test::TcpCrr,
    )
    .map(Some)
}
