//! The data stage: the vocabulary when the config needs one, then the input through the
//! plugin chain into `data/processed/` and `data/augmented/` (`crate::data::run`).

use std::time::Instant;

use super::{Context, Progress, Result, StageResult, ensure_vocab};
use crate::config::Config;
use crate::data::DataReport;
use crate::plugin::PluginEngine;

/// Runs the data stage of `config`. Records that fail are kept and reported in the result
/// (`DataReport::has_errors`); the error is for a stage that could not run at all.
pub fn data(config: &Config, progress: &mut dyn Progress) -> Result<DataReport> {
    config.require_data()?;
    if let Some(opts) = config.vocab_options() {
        ensure_vocab(&opts, progress)?;
    }
    let engine = PluginEngine::new(Some(config.work_dir().join("cache/plugins"))).context(|| "starting the plugin engine".into())?;
    let started = Instant::now();
    let report = crate::data::run(config, engine, &super::data_fingerprint(config), |done, swaps| progress.data_batch(done, swaps))
        .context(|| format!("data stage of {}", config.path.display()))?;
    progress.finished(StageResult::Data(&report, started.elapsed().as_secs_f64()));
    Ok(report)
}
