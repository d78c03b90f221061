//! `samizdat-lab`: the censor lab as a program of its own, so that the
//! production `samizdat` binary links neither the lab nor its test doubles
//! (docs/lab.md). It drives the samizdat binary built beside it (or
//! `SAMIZDAT_BIN`).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "samizdat-lab",
    version,
    about = "A censor in a box, on loopback only (docs/lab.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every subject (samizdat ee/dd/plain, SOCKS5, samizdat client)
    /// against every technique: a table on stdout, a Markdown report and
    /// an SVG heat map.
    Scorecard {
        /// Where to write the Markdown report.
        #[arg(long, default_value = "docs/lab-report.md")]
        out: PathBuf,
        /// Where to write the SVG heat map.
        #[arg(long, default_value = "docs/lab-heatmap.svg")]
        svg: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scorecard { out, svg } => tokio::runtime::Runtime::new()
            .and_then(|rt| rt.block_on(lab::scorecard::run_and_write(&out, &svg)))
            .map(drop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("samizdat-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
