//! `medtune run`: the whole pipeline of one config (`pipeline::run`), with progress and each
//! stage's summary as it finishes, then one line per stage.

use std::path::Path;
use std::process::ExitCode;

use super::console::Console;
use medtune::config::Config;
use medtune::pipeline::{self, StageStatus};

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let mut console = Console::for_run();
    let summary = pipeline::run(&config, &mut console)?;
    println!("run {}:", config.name);
    for line in &summary.stages {
        let what = match &line.status {
            StageStatus::Ran => "ran".to_owned(),
            StageStatus::Skipped => "unchanged, skipped".to_owned(),
            StageStatus::Resumed => "resumed from its last checkpoint".to_owned(),
            StageStatus::Wrote(path) => path.display().to_string(),
        };
        let secs = if line.seconds > 0.0 { format!(" ({:.1} s)", line.seconds) } else { String::new() };
        println!("  {:<7} {what}{secs}", line.stage.to_string());
    }
    Ok(super::partial_if(summary.partial))
}
