//! Loading a Hugging Face checkpoint folder: `config.json`, `tokenizer.json`, and
//! `model.safetensors` or the shards listed in `model.safetensors.index.json`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::config::Config;
use super::linear::Linear;
use super::llama::{Llama, Weights};
use super::tokenizer::Tokenizer;
use super::{LoadedModel, ModelError};

/// Loads a checkpoint folder (weights as f32).
pub fn load(dir: &Path, device: &Device) -> Result<LoadedModel, ModelError> {
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(|source| ModelError::Read { path: p, source });
    let config = Config::from_hf_file(&dir.join("config.json"))?;
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.is_file() {
        let map: serde_json::Value =
            serde_json::from_str(&read(index.clone())?).map_err(|e| ModelError::Format { path: index.clone(), message: e.to_string() })?;
        let mut shards: Vec<String> = map["weight_map"]
            .as_object()
            .ok_or_else(|| ModelError::Format { path: index.clone(), message: "no weight_map".into() })?
            .values()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        shards.sort();
        shards.dedup();
        shards.into_iter().map(|s| dir.join(s)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    // f32 throughout for now (bf16 on the GPU comes with the fast trainer).
    let dtype = DType::F32;
    let mut tensors = HashMap::new();
    for f in &files {
        let loaded = candle_core::safetensors::load(f, device)
            .map_err(|e| ModelError::Format { path: f.clone(), message: format!("not a readable safetensors file: {e}") })?;
        for (name, t) in loaded {
            tensors.insert(name, (t, f.clone()));
        }
    }
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let tied = config.tie_word_embeddings;
    let mut w = SafeWeights { tensors, dir: dir.to_owned(), dtype, used: HashSet::new() };
    let llama = Llama::load(config, &mut w, device)?;
    // a tensor the network did not take has no place in it (a bias, a layer of another
    // architecture) and would be ignored. A tied model's stored output layer is the embedding
    // matrix again, ignored by transformers too.
    let mut left: Vec<(&String, &PathBuf)> = w
        .tensors
        .iter()
        .filter(|(n, _)| !(w.used.contains(*n) || n.ends_with("rotary_emb.inv_freq") || (tied && n.as_str() == "lm_head.weight")))
        .map(|(n, (_, f))| (n, f))
        .collect();
    left.sort();
    if let Some((name, file)) = left.first() {
        return Err(ModelError::Unsupported {
            path: (*file).clone(),
            field: format!("tensor {name}"),
            value: format!("present ({} tensors without a place)", left.len()),
            why: format!("a {} model has no such weight: it would be ignored", llama.config().family.architecture()),
        });
    }
    Ok(LoadedModel { llama, tokenizer })
}

struct SafeWeights {
    tensors: HashMap<String, (Tensor, PathBuf)>,
    dir: PathBuf,
    dtype: DType,
    /// The names the network took.
    used: HashSet<String>,
}

impl SafeWeights {
    /// A tensor as `dtype`, marked as taken.
    fn get(&mut self, name: &str, dtype: DType) -> Result<Tensor, ModelError> {
        let (t, file) = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::Format { path: self.dir.clone(), message: format!("missing tensor {name}") })?;
        self.used.insert(name.to_owned());
        t.to_dtype(dtype).map_err(|e| ModelError::Format { path: file.clone(), message: format!("{name}: {e}") })
    }
}

impl Weights for SafeWeights {
    fn linear(&mut self, name: &str) -> Result<Linear, ModelError> {
        Ok(Linear::Dense(self.get(&format!("{name}.weight"), self.dtype)?))
    }

    fn dense(&mut self, name: &str) -> Result<Tensor, ModelError> {
        self.get(name, DType::F32)
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{name}.weight"))
    }
}
