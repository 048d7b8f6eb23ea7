//! `medtune data`: the data stage (`pipeline::data`) with a summary.

use std::path::Path;
use std::process::ExitCode;

use super::console::Console;
use medtune::config::Config;

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let report = medtune::pipeline::data(&config, &mut Console::default())?;
    Ok(super::partial_if(report.has_errors()))
}
