//! `aelabel`: parse, set up telemetry, dispatch.

use aelabel::cli::{run, Cli};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("error: invalid arguments");
            eprintln!("{first} (see `aelabel --help`)");
            return ExitCode::from(2);
        }
    };
    // A server logs its life at info; other commands stay quiet unless bars are off.
    let serving = matches!(cli.command, aelabel::cli::Command::Serve(_));
    let level = if cli.quiet || serving { "info" } else { "warn" };
    aelabel::telemetry::init(cli.log_format, level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = aelabel::telemetry::join_causes(e.chain().map(|c| c.to_string()));
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}
