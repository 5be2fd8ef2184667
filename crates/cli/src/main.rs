//! `pilus`: the Pilus command line. Thin: parsing and printing here, the work
//! in the library crates.

mod bench;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// Pilus: eBPF container networking. Inspect and drive the datapath.
#[derive(Parser, Debug)]
#[command(name = "pilus", version, about, propagate_version = true)]
struct Cli {
    /// Output format: human-readable tables, or JSON for scripts.
    #[arg(short = 'o', long = "output", value_enum, global = true, default_value_t = Output::Human)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks (measurements, not tests). Needs root.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("pilus: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench(cmd) => bench::run(cmd, cli.output),
    }
}
