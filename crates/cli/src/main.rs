//! `apr-ir`: lower an LLM to one dataflow IR, inspect and draw it.
//!
//! This crate only parses arguments, shows progress and formats output; every decision
//! lives in a library crate. Exit codes: 0 success, 2 could not run (bad input), with a
//! one-line reason on stderr.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI's job is to print

mod backend;
mod cmd;
mod default_model;
mod load;
mod npy;
mod progress;
mod repro;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "apr-ir",
    version,
    about = "Lower LLMs to one dataflow IR; run it on CPU and GPU; name the node where they diverge."
)]
struct Cli {
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Describe a model file: format, architecture, hyper-parameters, tensors.
    Inspect(cmd::inspect::Args),
    /// Write a random-weight GGUF with the shapes of a known model.
    Synth(cmd::synth::Args),
    /// Lower a model to IR and report nodes, dispatches per token and GPU bytes.
    Compile(cmd::compile::Args),
    /// Draw the IR (or part of it) as Graphviz DOT.
    Dot(cmd::dot::Args),
    /// Generate text (prompt, chat or token ids) with a model.
    Run(cmd::run::Args),
    /// Measure decode speed and weight streaming bandwidth.
    Bench(cmd::bench::Args),
    /// Run the IR on CPU and GPU, teacher-forced, and name the node where they diverge.
    Check(cmd::check::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Usage errors follow the same rule as every other error: one line, exit 2.
            let reason = if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                "no command given".to_string()
            } else {
                // clap's message is the lines before its "Usage:" line.
                let rendered = e.render().to_string();
                let lines: Vec<&str> = rendered
                    .lines()
                    .take_while(|l| !l.starts_with("Usage:"))
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                    .collect();
                lines.join(" ").trim_start_matches("error: ").to_string()
            };
            eprintln!("apr-ir: error: {reason} (see apr-ir --help)");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Compile(a) => cmd::compile::run(a),
        Command::Dot(a) => cmd::dot::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Check(a) => match cmd::check::run(a) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes joined with ": ".
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("apr-ir: error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
