//! LoRA adapters (Hu et al. 2021) on the linear layers of a frozen model: each adds
//! `(alpha/r) · B·A·dropout(x)` to its layer's output, with `A` (r × in) Kaiming-uniform and
//! `B` (out × r) zero, so training starts from the base model. Saved in PEFT's layout
//! (`adapter_config.json` + `adapter_model.safetensors`) so Python's peft, and
//! `model::Adapter`, load them.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};

use crate::model::{Adapters, Config, Linear, uniform};

/// LoRA hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// The update is scaled by `alpha / r`.
    pub alpha: f64,
    /// Dropout on the adapters' input while training.
    pub dropout: f32,
    /// Module names (`q_proj`, ..., `down_proj`).
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// All linear layers of a LLaMA block.
    pub fn all_linear(r: usize, alpha: f64, dropout: f32) -> Self {
        let targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"].map(String::from).to_vec();
        Self { r, alpha, dropout, targets }
    }
}

/// One adapter.
pub struct Lora {
    /// (r, in).
    pub a: Var,
    /// (out, r).
    pub b: Var,
}

/// The adapters of a model, by Hugging Face module name.
pub struct LoraSet {
    config: LoraConfig,
    layers: BTreeMap<String, Lora>,
    scale: f64,
    /// Whether dropout is applied (training) or not (evaluation).
    pub training: bool,
    /// Seeds the dropout masks of the next pass (set per micro-batch, so runs repeat).
    dropout_seed: std::sync::atomic::AtomicU64,
}

impl LoraSet {
    /// Fresh adapters for every targeted module of a model of `model` shape; `seed` makes
    /// `A` repeatable.
    pub fn new(config: LoraConfig, model: &Config, seed: u64, device: &Device) -> Result<Self> {
        let kv = model.num_key_value_heads * model.head_dim();
        let (h, f, q) = (model.hidden_size, model.intermediate_size, model.num_attention_heads * model.head_dim());
        let mut layers = BTreeMap::new();
        for i in 0..model.num_hidden_layers {
            for t in &config.targets {
                let (part, (out_dim, in_dim)) = match t.as_str() {
                    "q_proj" => ("self_attn", (q, h)),
                    "k_proj" => ("self_attn", (kv, h)),
                    "v_proj" => ("self_attn", (kv, h)),
                    "o_proj" => ("self_attn", (h, q)),
                    "gate_proj" => ("mlp", (f, h)),
                    "up_proj" => ("mlp", (f, h)),
                    "down_proj" => ("mlp", (h, f)),
                    other => candle_core::bail!("unknown LoRA target module {other:?}"),
                };
                let name = format!("model.layers.{i}.{part}.{t}");
                let seed = seed.wrapping_add(layers.len() as u64 * 7919);
                // Kaiming-uniform with a = sqrt(5), as PEFT: bound 1/sqrt(in)
                let a = Tensor::from_vec(uniform(config.r * in_dim, 1.0 / (in_dim as f64).sqrt(), seed), (config.r, in_dim), device)?;
                layers.insert(name, Lora { a: Var::from_tensor(&a)?, b: Var::zeros((out_dim, config.r), DType::F32, device)? });
            }
        }
        let scale = config.alpha / config.r as f64;
        Ok(Self { config, layers, scale, training: true, dropout_seed: 0.into() })
    }

    /// Replaces the adapters' values with those saved by [`LoraSet::save_peft`] in `dir`.
    pub fn load_peft(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("adapter_model.safetensors");
        let device = self.layers.values().next().map(|l| l.a.device().clone()).unwrap_or(Device::Cpu);
        let tensors = candle_core::safetensors::load(&path, &device)?;
        for (name, l) in &self.layers {
            for (part, var) in [("lora_A", &l.a), ("lora_B", &l.b)] {
                let key = format!("base_model.model.{name}.{part}.weight");
                let t = tensors.get(&key).ok_or_else(|| candle_core::Error::Msg(format!("{}: missing {key}", path.display())))?;
                var.set(t)?;
            }
        }
        Ok(())
    }

    /// Seeds the dropout masks of the next forward pass.
    pub fn set_dropout_seed(&self, seed: u64) {
        self.dropout_seed.store(seed, std::sync::atomic::Ordering::Relaxed);
    }

    /// The dropout mask of `module` for an input shaped like `x` (1 where an element is
    /// kept), as u8; `None` when no dropout applies.
    fn dropout_mask(&self, module: &str, x: &Tensor) -> Result<Option<Tensor>> {
        let p = self.config.dropout;
        if !self.training || p <= 0.0 {
            return Ok(None);
        }
        let seed = self.dropout_seed.load(std::sync::atomic::Ordering::Relaxed) ^ fnv(module);
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            // the same elements as the CPU's stream below
            return Ok(Some(crate::cuda::fused::dropout_mask(x, seed, p)?));
        }
        let mut state = seed;
        let values: Vec<u8> = (0..x.elem_count()).map(|_| u8::from(splitmix(&mut state) >= p)).collect();
        Ok(Some(Tensor::from_vec(values, x.shape(), x.device())?))
    }

    /// Every trainable tensor (A and B of each module).
    pub fn vars(&self) -> Vec<Var> {
        self.layers.values().flat_map(|l| [l.a.clone(), l.b.clone()]).collect()
    }

    /// The adapters, by module name.
    pub fn layers(&self) -> &BTreeMap<String, Lora> {
        &self.layers
    }

    /// Writes `adapter_config.json` and `adapter_model.safetensors` in PEFT's layout.
    pub fn save_peft(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut tensors = std::collections::HashMap::new();
        for (name, l) in &self.layers {
            tensors.insert(format!("base_model.model.{name}.lora_A.weight"), l.a.as_tensor().clone());
            tensors.insert(format!("base_model.model.{name}.lora_B.weight"), l.b.as_tensor().clone());
        }
        let tmp = dir.join(".adapter_model.safetensors.tmp");
        candle_core::safetensors::save(&tensors, &tmp).map_err(std::io::Error::other)?;
        std::fs::rename(&tmp, dir.join("adapter_model.safetensors"))?;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.config.r,
            "lora_alpha": self.config.alpha,
            "lora_dropout": self.config.dropout,
            "target_modules": self.config.targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "use_dora": false,
            "inference_mode": true,
        });
        crate::atomic::write(&dir.join("adapter_config.json"), serde_json::to_string_pretty(&config).unwrap_or_default().as_bytes())
    }
}

impl Adapters for LoraSet {
    /// `base(x) + scale · B·A·dropout(x)` as one op of the graph, keeping only `x`, `A`, `B`,
    /// the (u8) dropout mask, `A·(x⊙mask)` (r wide) and the output: the update's
    /// intermediates (two input-sized and three output-sized tensors per layer through
    /// candle's autograd) are not kept.
    fn linear(&self, module: &str, base: &Linear, x: &Tensor) -> Result<Tensor> {
        self.product(module, base, x, None, true)
    }

    /// The value is zeros: neither the base product nor the update is computed forward (the
    /// update's `A·x̃` still is, for B's gradient).
    fn linear_gradient_only(&self, module: &str, base: &Linear, x: &Tensor) -> Result<Tensor> {
        self.product(module, base, x, None, false)
    }

    /// The layers with adapters sum `x`'s gradient into one tensor as their backward passes
    /// run (each base product adds into it, cuBLAS with beta = 1), instead of candle adding
    /// each layer's into a new one.
    fn linear_shared(&self, layers: &[(&str, &Linear)], x: &Tensor) -> Result<Vec<Tensor>> {
        let members = layers.iter().filter(|(m, _)| self.layers.contains_key(*m)).count();
        let shared = (members > 1).then(|| std::sync::Arc::new(SharedGrad { sum: std::sync::Mutex::new((None, members)) }));
        layers.iter().map(|(module, base)| self.product(module, base, x, shared.clone(), true)).collect()
    }
}

/// The input gradient of layers that share one input: the sum so far, and how many of the
/// layers' backward passes are still to run. The last hands the sum to autograd; the others
/// pass none. Every layer's output must reach the loss, or the sum is never handed on (the
/// model's q, k, v and gate, up always do).
struct SharedGrad {
    sum: std::sync::Mutex<(Option<Tensor>, usize)>,
}

impl LoraSet {
    /// `module`'s training product; with `value` false its value is zeros (only its gradients
    /// are used).
    fn product(&self, module: &str, base: &Linear, x: &Tensor, shared: Option<std::sync::Arc<SharedGrad>>, value: bool) -> Result<Tensor> {
        let Some(l) = self.layers.get(module) else {
            return if value { base.forward_frozen(x) } else { base.frozen_gradient_only(x) };
        };
        let (dtype, in_dims) = (x.dtype(), x.dims().to_vec());
        let width = in_dims[in_dims.len() - 1];
        let rows = x.elem_count() / width;
        let input = x.detach().reshape((rows, width))?;
        let (a, b) = (l.a.as_tensor().detach(), l.b.as_tensor().detach());
        let mask = self.dropout_mask(module, &input)?;
        // Dropout's 1/(1-p) and alpha/r are one factor folded into B (r wide), so no
        // input- or output-sized tensor is multiplied by a scalar, forward or backward: with
        // x̃ = x⊙mask, update = x̃·Aᵀ·(s·B)ᵀ where s = scale/(1-p).
        let s = self.scale * if mask.is_some() { 1.0 / (1.0 - f64::from(self.config.dropout)) } else { 1.0 };
        // the products run in the activations' dtype (bf16 with `compute_dtype = "bf16"`):
        // A and B stay f32 for the optimizer and are cast (r wide) per call, while casting the
        // input and the output gradient to f32 was a seventh of a 7B step's GPU time
        let (ac, bs) = (a.to_dtype(dtype)?, (&b * s)?.to_dtype(dtype)?);
        let xa = masked(&input, mask.as_ref(), dtype)?.matmul(&ac.t()?)?;
        let y = if value {
            crate::model::ops::add_matmul(base.frozen_value(&input)?, &xa, &bs.t()?)?
        } else {
            Tensor::zeros((rows, base.out_dim()?), dtype, x.device())?
        };
        let mut out_dims = in_dims.clone();
        if let Some(last) = out_dims.last_mut() {
            *last = y.dim(1)?;
        }
        let y = y.reshape(out_dims)?;
        let base = base.clone();
        let master = a.dtype();
        crate::model::ops::attach3_partial(x, l.a.as_tensor(), l.b.as_tensor(), y, move |_, dy| {
            let dy = dy.reshape((rows, dy.elem_count() / rows))?;
            // dB = s·dyᵀ·(x̃·Aᵀ) (r wide); with u = dy·(s·B): dA = uᵀ·x̃, dx = dy·W + (u·A)⊙mask
            let db = (dy.t()?.matmul(&xa)?.to_dtype(master)? * s)?;
            let u = dy.matmul(&bs)?;
            let da = u.t()?.matmul(&masked(&input, mask.as_ref(), dtype)?)?.to_dtype(master)?;
            // the sum of the layers sharing x so far, taken out (no other tensor holds it)
            let mut sum = match &shared {
                Some(g) => Some(g.sum.lock().map_err(|_| candle_core::Error::Msg("shared gradient: poisoned lock".into()))?),
                None => None,
            };
            let acc = sum.as_mut().and_then(|s| s.0.take());
            let dx = base.frozen_input_grad_into(acc, &dy)?;
            let dx = match &mask {
                Some(m) => (dx + masked(&u.matmul(&ac)?, Some(m), dtype)?)?,
                None => crate::model::ops::add_matmul(dx, &u, &ac)?,
            };
            let dx = match sum.as_mut() {
                Some(s) if s.1 > 1 => {
                    s.1 -= 1;
                    s.0 = Some(dx);
                    None
                }
                _ => Some(dx.reshape(in_dims.as_slice())?),
            };
            Ok((dx, da, db))
        })
    }
}

/// `x` (as `dtype`), zero where `mask` is 0.
fn masked(x: &Tensor, mask: Option<&Tensor>, dtype: DType) -> Result<Tensor> {
    let x = x.to_dtype(dtype)?;
    match mask {
        Some(m) => x * m.to_dtype(dtype)?,
        None => Ok(x),
    }
}

/// FNV-1a of a module name: each module's dropout mask has its own stream.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// SplitMix64, as a uniform f32 in [0, 1).
fn splitmix(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};
    use candle_nn::{AdamW, Optimizer, ParamsAdamW};

    use super::*;
    use crate::model::{self, Adapter, Cache, LoadOptions};

    fn smollm2() -> std::path::PathBuf {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        model::fetch_smollm2(&root.join("target/models"), &root.join("target/wheels")).expect("SmolLM2")
    }

    fn loss(logits: &Tensor, ids: &[u32]) -> Tensor {
        let t = ids.len();
        let logits = logits.squeeze(0).and_then(|l| l.narrow(0, 0, t - 1)).expect("logits");
        let targets = Tensor::new(&ids[1..], logits.device()).expect("targets");
        candle_nn::loss::cross_entropy(&logits, &targets).expect("loss")
    }

    /// The fused LoRA product (dropout on) gives the value and the gradients (input, A, B)
    /// of the plain composition `x Wᵀ + scale · (x ⊙ mask/(1-p)) Aᵀ Bᵀ` through autograd.
    #[test]
    fn the_fused_lora_product_matches_autograd_of_the_plain_one() {
        let dev = Device::Cpu;
        let shape = model::shape("smollm2").expect("shape");
        let lora = LoraSet::new(LoraConfig::all_linear(4, 8.0, 0.3), &shape, 7, &dev).expect("lora");
        let module = "model.layers.0.self_attn.q_proj";
        let l = &lora.layers()[module];
        // B starts at zero: give it values so every gradient path carries something
        l.b.set(&Tensor::randn(0f32, 0.5, l.b.shape(), &dev).expect("b")).expect("set b");
        let (a, b) = (l.a.as_tensor().clone(), l.b.as_tensor().clone());
        let h = shape.hidden_size;
        let base = Linear::Dense(Tensor::randn(0f32, 0.05, (h, h), &dev).expect("w"));
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, h), &dev).expect("x")).expect("var");
        let probe = Tensor::randn(0f32, 1., (2, 3, h), &dev).expect("probe");
        lora.set_dropout_seed(11);
        let fused = lora.linear(module, &base, x.as_tensor()).expect("fused");
        let mask = lora.dropout_mask(module, &x.as_tensor().reshape((6, h)).expect("rows")).expect("mask").expect("dropout on");
        let kept = mask.to_dtype(DType::F32).and_then(|m| m.reshape((2, 3, h))).and_then(|m| m * (1.0 / 0.7)).expect("kept");
        let plain = (base.forward_frozen(x.as_tensor()).expect("base")
            + x.as_tensor()
                .mul(&kept)
                .and_then(|d| d.broadcast_matmul(&a.t()?))
                .and_then(|d| d.broadcast_matmul(&b.t()?))
                .and_then(|d| d * lora.scale)
                .expect("update"))
        .expect("sum");
        let diff = (&fused - &plain).and_then(|d| d.abs()).and_then(|d| d.max_all()).and_then(|d| d.to_scalar::<f32>()).expect("diff");
        assert!(diff < 1e-4, "values differ by {diff}");
        let g_fused = fused.mul(&probe).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
        let g_plain = plain.mul(&probe).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
        for (name, t) in [("x", x.as_tensor()), ("A", &a), ("B", &b)] {
            let (f, p) = (g_fused.get(t).unwrap_or_else(|| panic!("no gradient for {name}")), g_plain.get(t).expect("autograd"));
            let d = (f - p).and_then(|d| d.abs()).and_then(|d| d.max_all()).and_then(|d| d.to_scalar::<f32>()).expect("diff");
            let size = p.abs().and_then(|d| d.max_all()).and_then(|d| d.to_scalar::<f32>()).expect("size");
            assert!(d < 1e-4 * size.max(1.0), "{name}: gradients differ by {d} (largest {size})");
        }
    }

    /// Layers sharing an input (`linear_shared`, as q, k and v do), whose backward passes sum
    /// the input's gradient into one tensor, give the gradients of separate products (the
    /// input's summed by autograd there) and the same A and B gradients, dropout off and on.
    #[test]
    fn shared_input_layers_give_the_separate_gradients() {
        let dev = Device::Cpu;
        let shape = model::shape("smollm2").expect("shape");
        let h = shape.hidden_size;
        let modules = ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj"];
        for p in [0.0, 0.2] {
            let lora = LoraSet::new(LoraConfig::all_linear(4, 8.0, p), &shape, 5, &dev).expect("lora");
            let mut bases = Vec::new();
            for m in modules {
                let l = &lora.layers()[m];
                l.b.set(&Tensor::randn(0f32, 0.5, l.b.shape(), &dev).expect("b")).expect("set b");
                bases.push(Linear::Dense(Tensor::randn(0f32, 0.05, (l.b.dim(0).expect("out"), h), &dev).expect("w")));
            }
            let named: Vec<(&str, &Linear)> = modules.iter().copied().zip(&bases).collect();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, h), &dev).expect("x")).expect("var");
            let probes: Vec<Tensor> = bases
                .iter()
                .map(|b| Tensor::randn(0f32, 1., (2, 3, b.weight().and_then(|w| w.dim(0)).expect("out")), &dev).expect("probe"))
                .collect();
            let run = |shared: bool| -> Vec<Tensor> {
                lora.set_dropout_seed(9);
                let ys: Vec<Tensor> = if shared {
                    lora.linear_shared(&named, x.as_tensor()).expect("shared")
                } else {
                    named.iter().map(|(m, b)| lora.linear(m, b, x.as_tensor()).expect("separate")).collect()
                };
                let loss = ys.iter().zip(&probes).fold(Tensor::new(0f32, &dev).expect("zero"), |l, (y, p)| {
                    (l + y.mul(p).and_then(|t| t.sum_all()).expect("term")).expect("sum")
                });
                let grads = loss.backward().expect("backward");
                let mut wanted = vec![x.as_tensor().clone()];
                wanted.extend(
                    modules.iter().flat_map(|m| [lora.layers()[*m].a.as_tensor().clone(), lora.layers()[*m].b.as_tensor().clone()]),
                );
                wanted.iter().map(|t| grads.get(t).expect("a gradient reaches every input").clone()).collect()
            };
            let (shared, separate) = (run(true), run(false));
            for (i, (a, e)) in shared.iter().zip(&separate).enumerate() {
                let scale = e.abs().and_then(|t| t.flatten_all()).and_then(|t| t.max(0)).and_then(|t| t.to_scalar::<f32>()).expect("max");
                let diff = (a - e)
                    .and_then(|d| d.abs())
                    .and_then(|d| d.flatten_all())
                    .and_then(|d| d.max(0))
                    .and_then(|d| d.to_scalar::<f32>())
                    .expect("diff");
                assert!(scale > 0.0 && diff <= 1e-5 * scale, "dropout {p}, gradient {i}: differs by {diff} (largest {scale})");
            }
        }
    }

    /// Training with bf16 activations (`[model] compute_dtype = "bf16"`) gives the f32 pass's
    /// loss and adapter gradients to bf16 precision, and gradients reach every adapter.
    #[test]
    fn bf16_activations_train_like_f32() {
        let dev = Device::Cpu;
        let mut llama = model::random("smollm2", &dev).expect("model");
        let ids = Tensor::new(&[[5u32, 900, 31, 7, 4000, 12, 99, 3]], &dev).expect("ids");
        let mut lora = LoraSet::new(LoraConfig::all_linear(4, 8.0, 0.0), llama.config(), 3, &dev).expect("lora");
        // B from a seed per adapter (not `randn`: the CPU's generator cannot be seeded, and
        // with some draws an adapter's bf16 gradient norm strayed past the 10% bound)
        for (i, l) in lora.layers.values_mut().enumerate() {
            let b = Tensor::from_vec(model::uniform(l.b.elem_count(), 0.035, i as u64), l.b.shape(), &dev).expect("b");
            l.b.set(&b).expect("set b");
        }
        let run = |llama: &model::Llama| {
            let logits = llama.forward_train(&ids, &lora).expect("forward");
            let loss = loss(&logits, &[5, 900, 31, 7, 4000, 12, 99, 3]);
            let grads = loss.backward().expect("backward");
            let norms: Vec<f32> = lora
                .layers()
                .values()
                .map(|l| {
                    grads
                        .get(l.b.as_tensor())
                        .expect("gradient reaches B")
                        .sqr()
                        .and_then(|g| g.sum_all())
                        .and_then(|g| g.to_scalar::<f32>())
                        .expect("norm")
                        .sqrt()
                })
                .collect();
            (loss.to_scalar::<f32>().expect("loss"), norms)
        };
        let (loss32, g32) = run(&llama);
        llama.set_compute_dtype(DType::BF16);
        let (loss16, g16) = run(&llama);
        assert!((loss32 - loss16).abs() < 2e-2 * loss32.abs(), "loss f32 {loss32} vs bf16 {loss16}");
        for (i, (a, b)) in g32.iter().zip(&g16).enumerate() {
            assert!(*b > 0.0 && (a - b).abs() < 0.1 * a.abs().max(1e-6), "adapter {i}: gradient norm f32 {a} vs bf16 {b}");
        }
    }

    /// The memory mode (`Llama::backward_recomputed`, blocks run again in backward) gives the
    /// loss and every adapter gradient of one plain backward, with dropout on.
    #[test]
    fn recomputed_blocks_give_the_plain_backward() {
        recomputed_matches_plain(&Device::Cpu);
    }

    fn recomputed_matches_plain(dev: &Device) {
        let llama = model::random("smollm2", dev).expect("model");
        let mut lora = LoraSet::new(LoraConfig::all_linear(4, 8.0, 0.1), llama.config(), 3, dev).expect("lora");
        for (i, l) in lora.layers.values_mut().enumerate() {
            let b = Tensor::from_vec(model::uniform(l.b.elem_count(), 0.035, i as u64), l.b.shape(), dev).expect("b");
            l.b.set(&b).expect("set b");
        }
        lora.set_dropout_seed(11);
        let ids = [5u32, 900, 31, 7, 4000, 12, 99, 3];
        let x = Tensor::new(&[ids], dev).expect("ids");
        let loss_of = |h: &Tensor| Ok(loss(&llama.project(h)?, &ids));
        let plain = loss_of(&llama.hidden_train(&x, None, &lora).expect("forward")).expect("loss");
        let plain_grads = plain.backward().expect("backward");
        let vars = lora.vars();
        let (again, grads) = llama.backward_recomputed(&x, None, &lora, &vars, loss_of).expect("recomputed");
        let (a, b) = (plain.to_scalar::<f32>().expect("loss"), again.to_scalar::<f32>().expect("loss"));
        assert!((a - b).abs() < 1e-6 * a.abs(), "loss {a} vs recomputed {b}");
        for (i, v) in vars.iter().enumerate() {
            let (e, g) = (
                plain_grads.get(v.as_tensor()).expect("plain gradient"),
                grads.get(v.as_tensor()).unwrap_or_else(|| panic!("var {i}: no recomputed gradient")),
            );
            let scale = e.abs().and_then(|t| t.flatten_all()).and_then(|t| t.max(0)).and_then(|t| t.to_scalar::<f32>()).expect("max");
            let diff = (e - g)
                .and_then(|d| d.abs())
                .and_then(|d| d.flatten_all())
                .and_then(|d| d.max(0))
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff");
            assert!(scale > 0.0 && diff <= 1e-4 * scale, "var {i}: gradients differ by {diff} (largest {scale})");
        }
    }

    /// The training pass on CUDA (its fused kernels, cuBLAS adding the adapters' products in
    /// place, dropout masks from the seeded kernel) gives the CPU's loss and the gradient of
    /// every adapter's A and B: in f32 within 1e-3 relative, and with bf16 activations within
    /// the bounds of `bf16_activations_train_like_f32`.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_training_pass_matches_the_cpu() {
        let ids = [5u32, 900, 31, 7, 4000, 12, 99, 3];
        let run = |dev: &Device, dtype: DType| {
            let mut llama = model::random("smollm2", dev).expect("model");
            llama.set_compute_dtype(dtype);
            let mut lora = LoraSet::new(LoraConfig::all_linear(4, 8.0, 0.1), llama.config(), 3, dev).expect("lora");
            for (i, l) in lora.layers.values_mut().enumerate() {
                let b = Tensor::from_vec(model::uniform(l.b.elem_count(), 0.035, i as u64), l.b.shape(), dev).expect("b");
                l.b.set(&b).expect("set b");
            }
            // dropout on: CUDA must draw the CPU's masks
            lora.set_dropout_seed(11);
            let x = Tensor::new(&[ids], dev).expect("ids");
            let loss = loss(&llama.forward_train(&x, &lora).expect("forward"), &ids);
            let grads = loss.backward().expect("backward");
            let norm = |v: &Var| {
                grads
                    .get(v.as_tensor())
                    .expect("gradient reaches the adapter")
                    .sqr()
                    .and_then(|g| g.sum_all())
                    .and_then(|g| g.to_scalar::<f32>())
                    .expect("norm")
                    .sqrt()
            };
            let norms: Vec<(f32, f32)> = lora.layers().values().map(|l| (norm(&l.a), norm(&l.b))).collect();
            (loss.to_scalar::<f32>().expect("loss"), norms)
        };
        let gpu = Device::new_cuda(0).expect("CUDA device 0");
        let (loss, want) = run(&Device::Cpu, DType::F32);
        for (dtype, tol_loss, tol) in [(DType::F32, 1e-4f32, 1e-3f32), (DType::BF16, 2e-2, 0.1)] {
            let (l, got) = run(&gpu, dtype);
            assert!((l - loss).abs() < tol_loss * loss.abs(), "{dtype:?}: loss {l} vs the CPU's {loss}");
            for (i, ((a, b), (ea, eb))) in got.iter().zip(&want).enumerate() {
                for (what, g, e) in [("A", a, ea), ("B", b, eb)] {
                    assert!((g - e).abs() <= tol * e.abs().max(1e-6), "{dtype:?} adapter {i}: {what} gradient norm {g} vs the CPU's {e}");
                }
            }
        }
    }

    /// CUDA's dropout masks (`cuda::fused::dropout_mask`) are the CPU's, element for element, and
    /// keep about 1 − p of the elements.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_dropout_masks_are_the_cpu_masks() {
        let shape = model::shape("smollm2").expect("shape");
        let gpu = Device::new_cuda(0).expect("CUDA device 0");
        let masks: Vec<Vec<u8>> = [Device::Cpu, gpu]
            .iter()
            .map(|dev| {
                let lora = LoraSet::new(LoraConfig::all_linear(4, 8.0, 0.25), &shape, 1, dev).expect("lora");
                lora.set_dropout_seed(42);
                let x = Tensor::zeros((37, 1001), DType::F32, dev).expect("x");
                let mask = lora.dropout_mask("model.layers.3.mlp.up_proj", &x).expect("mask").expect("dropout on");
                mask.flatten_all().and_then(|m| m.to_vec1::<u8>()).expect("values")
            })
            .collect();
        assert!(masks[0] == masks[1], "the CUDA mask differs from the CPU's");
        let kept = masks[0].iter().filter(|&&k| k == 1).count() as f64 / masks[0].len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}");
    }

    /// The memory mode on CUDA, dropout on, gives one plain backward's loss and gradients.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_recomputed_blocks_give_the_plain_backward() {
        recomputed_matches_plain(&Device::new_cuda(0).expect("CUDA device 0"));
    }

    /// Packed rows (two examples a row, in both orders, so the rows' positions differ) give
    /// each example the hidden states it gets alone, and the adapters the gradients of the
    /// examples' losses summed, through the plain and the recomputed backward.
    #[test]
    fn packed_rows_compute_what_each_example_computes_alone() {
        packed_matches_alone(&Device::Cpu);
    }

    /// [`packed_rows_compute_what_each_example_computes_alone`] on CUDA (the packed softmax
    /// kernel, RoPE per row).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_packed_rows_compute_what_each_example_computes_alone() {
        packed_matches_alone(&Device::new_cuda(0).expect("CUDA device 0"));
    }

    fn packed_matches_alone(dev: &Device) {
        // f32: this random model's adapter gradients move by up to 1.5% when only the
        // products' sizes change (an unpacked row with a second example after the first gives
        // the first's gradients that much off too), so bf16's rounding would swamp them; the
        // packed kernels' bf16 path is checked against the CPU in `model::ops`
        let llama = model::random("smollm2", dev).expect("model");
        let (tol, grad_tol) = (1e-3, 3e-2);
        let lora = LoraSet::new(LoraConfig::all_linear(4, 8.0, 0.0), llama.config(), 3, dev).expect("lora");
        for (i, l) in lora.layers.values().enumerate() {
            let b = Tensor::from_vec(model::uniform(l.b.elem_count(), 0.035, i as u64), l.b.shape(), dev).expect("b");
            l.b.set(&b).expect("set b");
        }
        let (a, b): (Vec<u32>, Vec<u32>) = ((0..13).map(|i| 5 + i * 331).collect(), (0..11).map(|i| 17 + i * 577).collect());
        let row = |x: &[u32], y: &[u32]| [x, y].concat();
        let two_rows = |x: Vec<u32>, y: Vec<u32>| {
            let width = x.len();
            Tensor::from_vec([x, y].concat(), (2, width), dev).expect("two rows")
        };
        let ids = two_rows(row(&a, &b), row(&b, &a));
        let pos = |x: usize, y: usize| (0..x as u32).chain(0..y as u32).collect::<Vec<u32>>();
        let positions = two_rows(pos(a.len(), b.len()), pos(b.len(), a.len()));
        let vars = lora.vars();
        let loss_of = |h: &Tensor| h.to_dtype(DType::F32)?.sqr()?.sum_all();
        let packed = llama.hidden_train(&ids, Some(&positions), &lora).expect("packed");
        let alone = |x: &[u32]| {
            let ids = Tensor::new(x, dev).and_then(|t| t.unsqueeze(0)).expect("ids");
            llama.hidden_train(&ids, None, &lora).expect("alone")
        };
        let (ha, hb) = (alone(&a), alone(&b));
        let flat = |t: &Tensor| t.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).expect("vec");
        let close = |x: &Tensor, y: &Tensor, what: &str, tol: f32| {
            let (x, y) = (flat(x), flat(y));
            let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = x.iter().zip(&y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(x.len() == y.len() && diff <= tol * scale, "{what}: differs by {diff} (largest {scale})");
        };
        let part = |r: usize, from: usize, len: usize| packed.narrow(0, r, 1).and_then(|t| t.narrow(1, from, len)).expect("part");
        close(&part(0, 0, a.len()), &ha, "row 0, first example", tol);
        close(&part(0, a.len(), b.len()), &hb, "row 0, second example", tol);
        close(&part(1, 0, b.len()), &hb, "row 1, first example", tol);
        close(&part(1, b.len(), a.len()), &ha, "row 1, second example", tol);
        // gradients: the packed batch's loss is twice the two examples' alone
        let alone_loss = ((loss_of(&ha).expect("a") + loss_of(&hb).expect("b")).expect("sum") * 2.0).expect("x2");
        let want = alone_loss.backward().expect("backward");
        let plain = loss_of(&packed).expect("loss").backward().expect("backward");
        let (_, recomputed) = llama.backward_recomputed(&ids, Some(&positions), &lora, &vars, loss_of).expect("recomputed");
        for (i, v) in vars.iter().enumerate().step_by(17) {
            let w = want.get(v.as_tensor()).expect("gradient alone");
            close(plain.get(v.as_tensor()).expect("packed gradient"), w, &format!("var {i}, packed"), grad_tol);
            close(recomputed.get(v.as_tensor()).expect("recomputed gradient"), w, &format!("var {i}, packed and recomputed"), grad_tol);
        }
    }

    /// On the real SmolLM2 (f32): gradients reach the B of every adapter, first block's q/k
    /// included (through RoPE, softmax and RMSNorm); AdamW lowers the loss; the adapters,
    /// saved in PEFT's layout and merged back, give the training pass's logits.
    #[test]
    fn lora_trains_on_smollm2_and_round_trips_through_peft_layout() {
        let dev = Device::Cpu;
        let m = model::load_with(&smollm2(), &dev, LoadOptions { dequantize: true }).expect("load");
        let ids = m.tokenizer.encode("<|im_start|>user\nIs aspirin an anticoagulant?<|im_end|>\n<|im_start|>assistant\nno").expect("ids");
        let input = Tensor::new(ids.as_slice(), &dev).and_then(|t| t.unsqueeze(0)).expect("input");
        let mut lora = LoraSet::new(LoraConfig::all_linear(4, 8.0, 0.0), m.llama.config(), 0, &dev).expect("lora");
        assert_eq!(lora.layers().len(), 30 * 7);

        let first = loss(&m.llama.forward_train(&input, &lora).expect("forward"), &ids);
        let grads = first.backward().expect("backward");
        for (name, l) in lora.layers() {
            let g = grads.get(l.b.as_tensor()).unwrap_or_else(|| panic!("{name}: B gets no gradient"));
            let size = g.abs().and_then(|g| g.sum_all()).and_then(|g| g.to_scalar::<f32>()).expect("sum");
            assert!(size > 0.0, "{name}: zero gradient");
        }
        let mut opt = AdamW::new(lora.vars(), ParamsAdamW { lr: 1e-3, weight_decay: 0.0, ..Default::default() }).expect("adamw");
        let mut last = first.to_scalar::<f32>().expect("loss");
        let start = last;
        for _ in 0..4 {
            let l = loss(&m.llama.forward_train(&input, &lora).expect("forward"), &ids);
            last = l.to_scalar::<f32>().expect("loss");
            opt.backward_step(&l).expect("step");
        }
        assert!(last < start, "loss {start} -> {last}");

        lora.training = false;
        let trained = m.llama.forward_train(&input, &lora).and_then(|l| l.flatten_all()).and_then(|l| l.to_vec1::<f32>()).expect("logits");
        let dir = tempfile::tempdir().expect("tmp");
        lora.save_peft(dir.path()).expect("save");
        let mut merged = model::load_with(&smollm2(), &dev, LoadOptions { dequantize: true }).expect("load");
        let adapter = Adapter::load(dir.path(), &dev).expect("load adapter");
        assert_eq!(merged.llama.merge_adapter(&adapter).expect("merge"), 210);
        let inferred = merged
            .llama
            .forward(&input, &mut Cache::new(&merged.llama))
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.to_vec1::<f32>())
            .expect("logits");
        let diff = trained.iter().zip(&inferred).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 2e-3, "merged adapter vs training pass: {diff}");
    }
}
