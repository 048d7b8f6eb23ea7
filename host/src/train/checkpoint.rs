//! Checkpoints: `checkpoints/step-NNNNNN/` holds the adapters (PEFT layout), the optimizer's
//! moments and the step, written into a temporary folder and renamed into place, so a
//! checkpoint either exists whole or not at all.

use std::path::{Path, PathBuf};

use super::lora::LoraSet;
use super::optim::AdamW;
use crate::artifacts::{self, TrainerState};

/// A checkpoint on disk.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// Optimizer steps done when it was written.
    pub step: usize,
}

/// Writes a checkpoint of `lora` and `opt` after `step` steps; `fingerprint` identifies the
/// training config so a resume under another config is refused.
pub fn save(root: &Path, step: usize, lora: &LoraSet, opt: &AdamW, fingerprint: &str) -> std::io::Result<Checkpoint> {
    std::fs::create_dir_all(root)?;
    let dir = root.join(format!("step-{step:06}"));
    let tmp = root.join(format!(".tmp-step-{step:06}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    lora.save_peft(&tmp)?;
    candle_core::safetensors::save(&opt.state(), tmp.join("optimizer.safetensors")).map_err(std::io::Error::other)?;
    let state = TrainerState { step, fingerprint: fingerprint.to_owned() };
    artifacts::write(&tmp.join("trainer_state.json"), &state).map_err(std::io::Error::other)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir)?;
    Ok(Checkpoint { dir, step })
}

/// The checkpoint with the most steps under `root`, if any.
pub fn latest(root: &Path) -> Option<Checkpoint> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join("trainer_state.json").is_file().then(|| Checkpoint { dir: e.path(), step })
        })
        .max_by_key(|c| c.step)
}

/// The trainer state a checkpoint was written with.
pub fn state(ckpt: &Checkpoint) -> Result<TrainerState, artifacts::ArtifactError> {
    artifacts::read(&ckpt.dir.join("trainer_state.json"))
}

/// Loads `ckpt` into `lora` and `opt`; refuses one written under another config.
pub fn restore(ckpt: &Checkpoint, lora: &mut LoraSet, opt: &mut AdamW, fingerprint: &str) -> Result<(), String> {
    let state = self::state(ckpt).map_err(|e| e.to_string())?;
    let theirs = state.fingerprint;
    if theirs != fingerprint {
        return Err(format!(
            "{} was written under another training config (fingerprint {theirs}, now {fingerprint}); \
             delete the run folder or restore the config to resume",
            ckpt.dir.display()
        ));
    }
    lora.load_peft(&ckpt.dir).map_err(|e| format!("{}: {e}", ckpt.dir.display()))?;
    let device = lora.layers().values().next().map(|l| l.a.device().clone()).unwrap_or(candle_core::Device::Cpu);
    let path = ckpt.dir.join("optimizer.safetensors");
    let moments = candle_core::safetensors::load(&path, &device).map_err(|e| format!("{}: {e}", path.display()))?;
    opt.restore(&moments, ckpt.step).map_err(|e| format!("{}: {e}", path.display()))
}
