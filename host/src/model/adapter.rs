//! PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`), merged into the
//! model's weights: `W + (alpha/r) · B·A` (or `alpha/√r` with rsLoRA), or kept apart
//! ([`Lora`]) for a server that answers with several adapters over one base model.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::ModelError;
use super::linear::Linear;
use super::llama::Llama;

#[derive(Debug, Deserialize)]
struct AdapterConfig {
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    peft_type: Option<String>,
}

/// A loaded LoRA adapter: per Hugging Face module name, `(A, B)`, and the scale.
pub struct Adapter {
    layers: HashMap<String, (Tensor, Tensor)>,
    scale: f64,
}

impl Adapter {
    /// Reads a PEFT adapter folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| ModelError::Read { path: cfg_path.clone(), source })?;
        let cfg: AdapterConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::Format { path: cfg_path.clone(), message: e.to_string() })?;
        let bad = |message: String| ModelError::Format { path: cfg_path.clone(), message };
        if cfg.peft_type.as_deref().is_some_and(|t| t != "LORA") || cfg.use_dora {
            return Err(bad(format!(
                "peft_type {:?}{}: medtune merges plain LoRA adapters",
                cfg.peft_type,
                if cfg.use_dora { " with DoRA" } else { "" }
            )));
        }
        if cfg.r == 0 {
            return Err(bad("r is 0".into()));
        }
        let scale = if cfg.use_rslora { cfg.lora_alpha / (cfg.r as f64).sqrt() } else { cfg.lora_alpha / cfg.r as f64 };
        let weights = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&weights, device)
            .map_err(|e| ModelError::Format { path: weights.clone(), message: format!("not a readable safetensors file: {e}") })?;
        let mut parts: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
        for (name, t) in tensors {
            let module = name.strip_prefix("base_model.model.").unwrap_or(&name);
            let (module, which) = if let Some(m) = module.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = module.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                return Err(ModelError::Format { path: weights.clone(), message: format!("tensor {name} is not a LoRA A or B weight") });
            };
            let entry = parts.entry(module.to_owned()).or_default();
            let t = t
                .to_dtype(candle_core::DType::F32)
                .map_err(|e| ModelError::Format { path: weights.clone(), message: format!("{name}: {e}") })?;
            if which == 0 { entry.0 = Some(t) } else { entry.1 = Some(t) }
        }
        let mut layers = HashMap::new();
        for (module, (a, b)) in parts {
            match (a, b) {
                (Some(a), Some(b)) => {
                    layers.insert(module, (a, b));
                }
                _ => {
                    return Err(ModelError::Format {
                        path: weights.clone(),
                        message: format!("{module} has only one of lora_A and lora_B"),
                    });
                }
            }
        }
        Ok(Adapter { layers, scale })
    }

    /// How many modules the adapter changes.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The names of the modules it changes.
    pub(crate) fn modules(&self) -> impl Iterator<Item = &String> {
        self.layers.keys()
    }

    /// `linear` with this adapter's update for `module` merged in (as dense f32), if it has one.
    pub(crate) fn merge(&self, module: &str, linear: &Linear) -> Result<Option<Linear>, ModelError> {
        let Some((a, b)) = self.layers.get(module) else { return Ok(None) };
        let ctx = |e: candle_core::Error| ModelError::Candle { context: format!("merging the adapter into {module}"), source: e };
        let w = linear.weight().map_err(ctx)?;
        let update = (b.matmul(a).map_err(ctx)? * self.scale).map_err(ctx)?;
        if update.dims() != w.dims() {
            return Err(ModelError::Format {
                path: module.into(),
                message: format!("adapter update {:?} does not fit the weight {:?}", update.dims(), w.dims()),
            });
        }
        let merged = w.to_dtype(candle_core::DType::F32).and_then(|w| w + update).map_err(ctx)?;
        Ok(Some(Linear::Dense(merged)))
    }
}

/// An adapter kept apart from the weights, applied to the rows of the sequences that ask for
/// it ([`super::Segment::lora`]): per module, `Aᵀ` (in, r) and `scale · Bᵀ` (r, out), in the
/// model's compute dtype on its device, so a row's update is `(x·Aᵀ)·(scale·Bᵀ)`.
pub struct Lora {
    layers: HashMap<String, (Tensor, Tensor)>,
}

impl Adapter {
    /// This adapter ready to be applied unmerged to `llama`'s rows: every module it names must
    /// be one of the model's projections, with shapes that fit.
    pub fn unmerged(&self, llama: &Llama) -> Result<Lora, ModelError> {
        let mut layers = HashMap::with_capacity(self.layers.len());
        for (module, (a, b)) in &self.layers {
            let Some(linear) = llama.adapted_layer(module) else { return Err(llama.unknown_modules(self.modules())) };
            let ctx = |e: candle_core::Error| ModelError::Candle { context: format!("preparing the adapter's {module}"), source: e };
            let (out, inputs) = (linear.out_dim().map_err(ctx)?, linear.in_dim().map_err(ctx)?);
            let (ra, ia) = a.dims2().map_err(ctx)?;
            let (ob, rb) = b.dims2().map_err(ctx)?;
            if ra != rb || ia != inputs || ob != out {
                return Err(ModelError::Format {
                    path: module.into(),
                    message: format!("adapter lora_A {:?} and lora_B {:?} do not fit the weight ({out}, {inputs})", a.dims(), b.dims()),
                });
            }
            let dtype = llama.compute_dtype();
            let prepare = || -> candle_core::Result<(Tensor, Tensor)> {
                let at = a.t()?.contiguous()?.to_dtype(dtype)?.to_device(llama.device())?;
                let bt = (b.t()?.contiguous()? * self.scale)?.to_dtype(dtype)?.to_device(llama.device())?;
                Ok((at, bt))
            };
            layers.insert(module.clone(), prepare().map_err(ctx)?);
        }
        Ok(Lora { layers })
    }
}

impl Lora {
    /// An adapter from its modules' `Aᵀ` and `scale · Bᵀ` (tests).
    #[cfg(test)]
    pub(crate) fn from_parts(layers: HashMap<String, (Tensor, Tensor)>) -> Self {
        Lora { layers }
    }

    /// `Aᵀ` and `scale · Bᵀ` of `module`, when the adapter changes it.
    pub(crate) fn get(&self, module: &str) -> Option<&(Tensor, Tensor)> {
        self.layers.get(module)
    }

    /// How many modules it changes.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}
