//! `medtune export`: the config's model with its adapter merged, as an ONNX folder
//! (`model.onnx`, `config.json`, `tokenizer.json`), checked against candle on ONNX Runtime
//! (`pipeline::export`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::console::Console;
use super::{AdapterArgs, ConfigArg};
use medtune::config::Config;
use medtune::export::Precision;
use medtune::pipeline::{self, ExportRequest};

/// `medtune export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The output folder (default: runs/<name>/onnx).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// The linear layers: `f32`, `f16` (stored f16, computed f32: half the file) or `int8`
    /// (dynamic quantization, smoothed on training prompts: int8 weights, faster on CPUs,
    /// approximate).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

pub fn export_cmd(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?;
    let request = ExportRequest { out: args.out, adapter: args.adapter.adapter, base: args.adapter.base, precision: args.precision };
    pipeline::export(&config, &request, &mut Console::default())?;
    Ok(ExitCode::SUCCESS)
}
