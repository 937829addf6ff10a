//! `apr-ir`: lower an LLM to one dataflow IR, inspect and draw it.
//!
//! This crate only parses arguments, shows progress and formats output; every decision
//! lives in a library crate. Exit codes: 0 success, 2 could not run (bad input), with a
//! one-line reason on stderr.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI's job is to print

mod cmd;
mod load;
mod progress;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "apr-ir", version, about = "Lower LLMs to one dataflow IR; run it on CPU and GPU; name the node where they diverge.")]
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are successes; usage errors are exit 2 with clap's text.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Synth(a) => cmd::synth::run(a),
        Command::Compile(a) => cmd::compile::run(a),
        Command::Dot(a) => cmd::dot::run(a),
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
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
