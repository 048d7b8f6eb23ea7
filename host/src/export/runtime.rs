//! ONNX Runtime inference over an exported model, through `ort` with `libonnxruntime` loaded
//! at run time from the pinned `onnxruntime` wheel (fetched with pip by the set-up; never at
//! build time). Batch 1, with the KV cache carried between calls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;

use crate::wheel::{self, Wheel};

use super::ExportError;

/// The ONNX Runtime wheel medtune loads `libonnxruntime` from (Linux x86-64; the library is the
/// same for every Python version).
pub const ONNXRUNTIME: Wheel = Wheel {
    package: "onnxruntime",
    version: "1.32.0",
    file: "onnxruntime-1.32.0-cp312-cp312-manylinux_2_28_x86_64.whl",
    sha256: "99e1074c4b2197accd5073052a465361be17b89c093b8ffb6e6bd8f986c52df8",
    pip_args: &["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--platform", "manylinux_2_28_x86_64"],
};

const LIBRARY: &str = "onnxruntime/capi/libonnxruntime.so.1.32.0";

/// `libonnxruntime`: `$ORT_DYLIB_PATH` if set, else extracted from the pinned wheel (fetched
/// into `wheels` when missing) into `cache`.
pub fn ort_library(cache: &Path, wheels: &Path) -> Result<PathBuf, ExportError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    let dest = cache.join("onnxruntime").join("libonnxruntime.so.1.32.0");
    if dest.is_file() {
        return Ok(dest);
    }
    let whl = wheel::fetch(&ONNXRUNTIME, wheels, true)?;
    let bytes = wheel::member(&whl, LIBRARY)?;
    crate::atomic::write(&dest, &bytes).map_err(|source| ExportError::Write { path: dest.clone(), source })?;
    Ok(dest)
}

fn ort_err(e: impl std::fmt::Display) -> ExportError {
    ExportError::Ort(e.to_string())
}

/// What ONNX Runtime logged at warning level or above (graph problems show up here).
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The process's one ONNX Runtime environment (ONNX Runtime allows one), made on first use
/// with `library`; its warnings and errors are collected for [`ort_warnings`].
fn environment(library: &Path) -> Result<&'static ort::environment::Environment, ExportError> {
    static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let logger = |level: ort::logging::LogLevel, _category: &str, _id: &str, place: &str, message: &str| {
            if matches!(level, ort::logging::LogLevel::Warning | ort::logging::LogLevel::Error | ort::logging::LogLevel::Fatal)
                && let Ok(mut w) = WARNINGS.lock()
            {
                w.push(format!("{level:?} {place}: {message}"));
            }
        };
        ort::init_from(library)
            .map_err(|e| e.to_string())?
            .with_name("medtune")
            .with_logger(Arc::new(logger))
            .build()
            .map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|e| ExportError::Ort(format!("{}: {e}", library.display())))
}

/// The warnings ONNX Runtime has logged in this process.
pub fn ort_warnings() -> Vec<String> {
    WARNINGS.lock().map(|w| w.clone()).unwrap_or_default()
}

/// An exported model in an ONNX Runtime session.
pub struct OrtModel {
    session: Mutex<Session>,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    /// The longest sequence the graph computes as the model does (its sliding window).
    max_sequence: usize,
}

/// The keys and values of the positions seen so far (per layer, [1, kv_heads, len, head_dim]).
#[derive(Default, Clone)]
pub struct OrtCache {
    kv: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
}

impl OrtCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Where ONNX Runtime runs a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrtDevice {
    /// The CPU provider.
    Cpu,
    /// The CUDA provider on this GPU.
    Cuda(usize),
}

impl OrtModel {
    /// Loads `onnx` with the runtime library at `library`; `config` gives the cache's shape.
    pub fn load(library: &Path, onnx: &Path, config: &crate::model::Config, threads: usize) -> Result<Self, ExportError> {
        Self::load_on(library, onnx, config, threads, OrtDevice::Cpu)
    }

    /// [`OrtModel::load`] on `device`: a GPU through the library's CUDA execution provider,
    /// refused (naming the library) when the library has none.
    pub fn load_on(
        library: &Path,
        onnx: &Path,
        config: &crate::model::Config,
        threads: usize,
        device: OrtDevice,
    ) -> Result<Self, ExportError> {
        let env = environment(library)?;
        let builder = Session::builder(env).map_err(ort_err)?;
        let builder = match device {
            OrtDevice::Cpu => builder,
            #[cfg(feature = "cuda")]
            OrtDevice::Cuda(gpu) => builder
                .with_execution_providers([ort::ep::CUDA::default().with_device_id(gpu as i32).build().error_on_failure()])
                .map_err(|e| {
                    ExportError::Ort(format!(
                        "{}: no usable CUDA execution provider ({e}); onnxruntime-gpu's library has one",
                        library.display()
                    ))
                })?,
            #[cfg(not(feature = "cuda"))]
            OrtDevice::Cuda(_) => {
                return Err(ExportError::Ort("the CUDA execution provider needs a medtune built with --features cuda".into()));
            }
        };
        let session = builder
            .with_intra_threads(threads.max(1))
            .map_err(ort_err)?
            // masked attention scores underflow into subnormals in the softmax, which made it
            // 6x slower (a quarter of a 300-token prompt's time); flushed, they cost nothing
            .with_flush_to_zero()
            .map_err(ort_err)?
            .commit_from_file(onnx)
            .map_err(ort_err)?;
        Ok(Self {
            session: Mutex::new(session),
            layers: config.num_hidden_layers,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim(),
            vocab: config.vocab_size,
            max_sequence: config.max_sequence(),
        })
    }

    /// Logits (vocab) at the last of `ids`, following what `cache` holds; the cache grows by
    /// `ids`.
    pub fn forward(&self, ids: &[u32], cache: &mut OrtCache) -> Result<Vec<f32>, ExportError> {
        let (n, past) = (ids.len(), cache.len);
        if past + n > self.max_sequence {
            return Err(ExportError::Ort(format!(
                "a sequence of {} tokens is longer than the model's {} positions (or sliding window)",
                past + n,
                self.max_sequence
            )));
        }
        if cache.kv.is_empty() {
            cache.kv = vec![(Vec::new(), Vec::new()); self.layers];
        }
        let mut inputs: Vec<(String, SessionInputValue)> = vec![
            (
                "input_ids".into(),
                Tensor::from_array(([1usize, n], ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>())).map_err(ort_err)?.into(),
            ),
            ("attention_mask".into(), Tensor::from_array(([1usize, past + n], vec![1i64; past + n])).map_err(ort_err)?.into()),
            (
                "position_ids".into(),
                Tensor::from_array(([1usize, n], (past..past + n).map(|p| p as i64).collect::<Vec<_>>())).map_err(ort_err)?.into(),
            ),
        ];
        for (i, (k, v)) in cache.kv.iter().enumerate() {
            let shape = [1usize, self.kv_heads, past, self.head_dim];
            inputs.push((format!("past_key_values.{i}.key"), Tensor::from_array((shape, k.clone())).map_err(ort_err)?.into()));
            inputs.push((format!("past_key_values.{i}.value"), Tensor::from_array((shape, v.clone())).map_err(ort_err)?.into()));
        }
        let mut session = self.session.lock().map_err(|_| ExportError::Ort("the session lock is poisoned".into()))?;
        let out = session.run(inputs).map_err(ort_err)?;
        let (_, logits) = out["logits"].try_extract_tensor::<f32>().map_err(ort_err)?;
        let logits = logits.to_vec();
        for i in 0..self.layers {
            let (_, k) = out[format!("present.{i}.key")].try_extract_tensor::<f32>().map_err(ort_err)?;
            let (_, v) = out[format!("present.{i}.value")].try_extract_tensor::<f32>().map_err(ort_err)?;
            cache.kv[i] = (k.to_vec(), v.to_vec());
        }
        cache.len = past + n;
        if logits.len() != self.vocab {
            return Err(ExportError::Ort(format!(
                "the graph gave {} logits, not one position's {} (an export older than this medtune?)",
                logits.len(),
                self.vocab
            )));
        }
        Ok(logits)
    }
}
