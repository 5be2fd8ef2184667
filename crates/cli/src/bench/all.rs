//! `pilus bench all`: every benchmark in one run, the target table, and
//! with `--docs` the generated page and its plots
//! (`pilus_bench::{all, docs, plot}`).

use crate::Output;
use anyhow::{Context, Result};
use clap::Args;
use pilus_bench::{
    all::{self, Options, Report, Verdict},
    docs, plot,
};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Args, Debug)]
pub struct AllArgs {
    /// A smoke run for CI: every benchmark, tiny (its numbers mean nothing).
    #[arg(long)]
    quick: bool,
    /// Write the page `benchmarks-current.md` and its plots (`bench/*.svg`)
    /// into this directory (the repository's `docs`).
    #[arg(long, value_name = "DIR")]
    docs: Option<PathBuf>,
    /// Wait (up to --max-wait seconds) until the 1-minute load average is
    /// below this before starting; fail if it does not come down.
    #[arg(long, value_name = "LOAD")]
    max_load: Option<f64>,
    /// Seconds to wait for --max-load.
    #[arg(long, default_value_t = 600)]
    max_wait: u64,
}

fn wait_for_load(max: f64, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let now = pilus_bench::machine::loadavg()[0];
        if now < max {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the 1-minute load average stayed at {now:.2}, above {max}, for {limit:?}"
            );
        }
        tracing::info!(load = now, max, "waiting for the machine to be quiet");
        std::thread::sleep(Duration::from_secs(10));
    }
}

/// Writes the page and every plot into `dir`; returns the paths written.
fn write_docs(dir: &Path, r: &Report, command: &str) -> Result<Vec<PathBuf>> {
    let plots = plot::all(&r.traffic)?;
    let plot_dir = dir.join(docs::PLOTS);
    std::fs::create_dir_all(&plot_dir)
        .with_context(|| format!("creating {}", plot_dir.display()))?;
    let mut written = Vec::new();
    for p in &plots {
        let path = plot_dir.join(&p.name);
        std::fs::write(&path, &p.text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    let names: Vec<String> = plots.into_iter().map(|p| p.name).collect();
    let page = dir.join(docs::PAGE);
    std::fs::write(&page, docs::page(r, command, &names))
        .with_context(|| format!("writing {}", page.display()))?;
    written.push(page);
    Ok(written)
}

pub fn run(a: AllArgs, output: Output) -> Result<()> {
    if let Some(max) = a.max_load {
        wait_for_load(max, Duration::from_secs(a.max_wait))?;
    }
    let bin_dir = super::bin_dir()?;
    let opts = if a.quick {
        Options::quick(bin_dir)
    } else {
        Options::full(bin_dir)
    };
    let report = all::run(&opts)?;
    if let Some(dir) = &a.docs {
        let command = std::iter::once("pilus".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
        for p in write_docs(dir, &report, &command)? {
            tracing::info!(path = %p.display(), "written");
        }
    }
    super::emit(&report, output, print_table)
}

fn print_table(r: &Report) {
    super::traffic::print_table(&r.traffic);
    println!(
        "\npilus bench all{}: {:.0} s, load {:.2} -> {:.2}",
        if r.quick { " --quick" } else { "" },
        r.seconds,
        r.load_before[0],
        r.load_after[0]
    );
    println!(
        "{:<4} {:<66} {:<8} {:<28} verdict",
        "iss.", "target", "want", "measured"
    );
    for t in &r.targets {
        let v = match t.verdict {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        };
        println!(
            "{:<4} {:<66} {:<8} {:<28} {v}  {}",
            t.issue, t.metric, t.target, t.shown, t.note
        );
    }
}
