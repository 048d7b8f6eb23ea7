//! The LLaMA architecture in the Hugging Face layout (`model.layers.N.self_attn.q_proj`, ...):
//! RMSNorm, grouped-query attention with non-interleaved RoPE, SwiGLU MLP, optional tied
//! output. A separate [`Cache`] holds the keys and values of earlier positions.

use candle_core::{DType, Device, Module, Result, Tensor};

use super::config::Config;
use super::linear::Linear;
use super::rowlora::RowLora;
use super::slots::Slots;

#[cfg(feature = "cuda")]
mod step;

/// Where the loaders find weights, by Hugging Face name.
pub(crate) trait Weights {
    /// A linear layer (`...q_proj`), in the (out, in) layout.
    fn linear(&mut self, name: &str) -> std::result::Result<Linear, super::ModelError>;
    /// A vector or matrix as f32 (norm weights, the embedding matrix).
    fn dense(&mut self, name: &str) -> std::result::Result<Tensor, super::ModelError>;
    /// Whether a tensor exists.
    fn has(&self, name: &str) -> bool;
}

/// Trainable updates added to the outputs of linear layers (LoRA).
pub trait Adapters {
    /// The training product of the frozen layer `base` of `module`
    /// (`model.layers.3.self_attn.q_proj`) for `x`, with the module's update added when it
    /// has one ([`Linear::forward_frozen`] when it has none).
    fn linear(&self, module: &str, base: &Linear, x: &Tensor) -> Result<Tensor>;

    /// The training products of layers that share the input `x` (q, k and v; gate and up),
    /// in order: one [`Adapters::linear`] each unless the adapters sum `x`'s gradient
    /// themselves.
    fn linear_shared(&self, layers: &[(&str, &Linear)], x: &Tensor) -> Result<Vec<Tensor>> {
        layers.iter().map(|(module, base)| self.linear(module, base, x)).collect()
    }

    /// [`Adapters::linear`] where only the gradients are used, not the value (the last
    /// product of a block half recomputed by [`Llama::backward_recomputed`]): the same
    /// gradients for `x` and the adapters; the value may skip the base product.
    fn linear_gradient_only(&self, module: &str, base: &Linear, x: &Tensor) -> Result<Tensor> {
        self.linear(module, base, x)
    }
}

/// How a forward pass runs.
#[derive(Clone, Copy)]
pub enum Pass<'a> {
    /// Inference: candle's fused kernels.
    Infer,
    /// Training: ops that pass gradients to their inputs, plus the adapters' updates.
    Train(&'a dyn Adapters),
    /// A training pass of a block half run again in backward, whose output value is not used
    /// (only its known gradient is): the half's last product gives gradients, not values.
    Recompute(&'a dyn Adapters),
    /// Inference in a server's batched step: the weights' batched products
    /// ([`Linear::forward_batched`]).
    Batch,
    /// Inference with unmerged adapters on groups of rows (a server's several adapters), in a
    /// batched step or not ([`RowLora`]).
    Rows(&'a RowLora<'a>),
}

impl Pass<'_> {
    fn linear(&self, l: &Linear, x: &Tensor, module: impl FnOnce() -> String) -> Result<Tensor> {
        match self {
            Pass::Infer => l.forward(x),
            Pass::Batch => l.forward_batched(x),
            Pass::Rows(r) => r.apply(&module(), x, r.base(l, x)?),
            Pass::Train(a) | Pass::Recompute(a) => a.linear(&module(), l, x),
        }
    }

    /// [`Pass::linear`] of a block half's last product, whose value a recomputed pass does
    /// not use.
    fn last_linear(&self, l: &Linear, x: &Tensor, module: impl FnOnce() -> String) -> Result<Tensor> {
        match self {
            Pass::Recompute(a) => a.linear_gradient_only(&module(), l, x),
            _ => self.linear(l, x, module),
        }
    }

    /// [`Pass::linear`] of layers sharing the input `x`, named `prefix.module`.
    fn linear_shared(&self, layers: &[(&Linear, &str)], x: &Tensor, prefix: &str) -> Result<Vec<Tensor>> {
        match self {
            Pass::Infer => layers.iter().map(|(l, _)| l.forward(x)).collect(),
            Pass::Batch => super::linear::forward_batched_shared(&layers.iter().map(|(l, _)| *l).collect::<Vec<_>>(), x),
            Pass::Rows(r) => layers.iter().map(|(l, m)| r.apply(&format!("{prefix}.{m}"), x, r.base(l, x)?)).collect(),
            Pass::Train(a) | Pass::Recompute(a) => {
                let names: Vec<String> = layers.iter().map(|(_, m)| format!("{prefix}.{m}")).collect();
                let named: Vec<(&str, &Linear)> = names.iter().zip(layers).map(|(n, (l, _))| (n.as_str(), *l)).collect();
                a.linear_shared(&named, x)
            }
        }
    }

    fn training(&self) -> bool {
        !matches!(self, Pass::Infer | Pass::Batch | Pass::Rows(_))
    }
}

struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor, pass: Pass<'_>) -> Result<Tensor> {
        let weight = self.weight.to_dtype(x.dtype())?;
        if pass.training() { super::ops::rms_norm(x, &weight, f64::from(self.eps)) } else { candle_nn::ops::rms_norm(x, &weight, self.eps) }
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// The biases of q, k and v (Qwen2's; frozen), f32.
    bias: Option<[Tensor; 3]>,
    /// q, k and v as one layer, whose rows they view (`join`; a CUDA server's).
    qkv: Option<Linear>,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    /// gate and up as one layer, whose rows they view (`join`; a CUDA server's).
    gate_up: Option<Linear>,
}

/// Joins dense layers that share an input into one weight (`[q; k; v]`, `[gate; up]`) whose
/// rows the layers then view: one product a step instead of two or three, and no more
/// memory. Returns the joined layer, or none (left alone) unless every layer is dense.
#[cfg(feature = "cuda")]
fn join(layers: &mut [&mut Linear]) -> Result<Option<Linear>> {
    let weights: Option<Vec<Tensor>> = layers
        .iter()
        .map(|l| match &**l {
            Linear::Dense(w) => Some(w.clone()),
            _ => None,
        })
        .collect();
    let Some(weights) = weights else { return Ok(None) };
    let joined = Tensor::cat(&weights, 0)?;
    let mut at = 0;
    for (l, w) in layers.iter_mut().zip(&weights) {
        let n = w.dim(0)?;
        **l = Linear::Dense(joined.narrow(0, at, n)?);
        at += n;
    }
    Ok(Some(Linear::Dense(joined)))
}

struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// A LLaMA-family causal language model.
pub struct Llama {
    config: Config,
    pub(super) embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// The dtype activations flow in (f32 unless [`Llama::set_compute_dtype`] says otherwise).
    compute: DType,
}

/// Keys and values of the positions seen so far, per block.
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
}

impl Cache {
    /// An empty cache for `model`.
    pub fn new(model: &Llama) -> Self {
        Cache { kv: vec![None; model.blocks.len()] }
    }

    /// How many positions are cached.
    pub fn len(&self) -> usize {
        self.kv.first().and_then(|c| c.as_ref()).map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One sequence's keys and values for [`Llama::forward_segments`], per block, in slots
/// written in place (`model::slots`, growing 256 positions at a time): a step appends without
/// copying what is cached.
pub struct SeqCache {
    kv: Vec<Slots>,
}

impl SeqCache {
    /// An empty cache for `model`.
    pub fn new(model: &Llama) -> Self {
        SeqCache { kv: (0..model.blocks.len()).map(|_| Slots::default()).collect() }
    }

    /// How many positions are cached.
    pub fn len(&self) -> usize {
        self.kv.first().map_or(0, Slots::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A piece of one sequence in a batched step: its next tokens (a prompt chunk, or the one
/// token just sampled) after what its cache holds.
pub struct Segment<'a> {
    /// The tokens.
    pub ids: &'a [u32],
    /// The sequence's cache, extended by the step.
    pub cache: &'a mut SeqCache,
    /// The adapter its rows go through, unmerged (none: the weights as loaded).
    pub lora: Option<&'a super::Lora>,
}

/// A segment's place in the step: its rows in the batch, and its RoPE tables and mask.
struct SegmentPlan {
    offset: usize,
    len: usize,
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
}

impl Attention {
    /// The query, key and value projections of `x` (with their biases when the family has
    /// them).
    fn qkv(&self, x: &Tensor, pass: Pass<'_>, prefix: &str) -> Result<[Tensor; 3]> {
        let [q, k, v]: [Tensor; 3] = pass
            .linear_shared(&[(&self.q, "q_proj"), (&self.k, "k_proj"), (&self.v, "v_proj")], x, &format!("{prefix}.self_attn"))?
            .try_into()
            .map_err(|_| candle_core::Error::Msg("q, k, v: three products expected".into()))?;
        Ok(match &self.bias {
            Some([bq, bk, bv]) => {
                let add = |y: Tensor, b: &Tensor| y.broadcast_add(&b.to_dtype(y.dtype())?);
                [add(q, bq)?, add(k, bk)?, add(v, bv)?]
            }
            None => [q, k, v],
        })
    }

    /// Attention for a batched step: the projections over all rows at once, then each
    /// segment's rows rotated at its own positions, appended to its own cache and attending
    /// to it alone.
    fn forward_segments(&self, x: &Tensor, plan: &[SegmentPlan], segs: &mut [Segment<'_>], layer: usize, pass: Pass<'_>) -> Result<Tensor> {
        let prefix = format!("model.layers.{layer}");
        let [q, k, v] = self.qkv(x, pass, &prefix)?;
        let group = self.n_head / self.n_kv_head;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        if x.device().is_cpu() && q.dtype() == DType::F32 {
            return self.forward_segments_fused(&q, &k, &v, plan, segs, layer, pass);
        }
        let mut ys = Vec::with_capacity(plan.len());
        for (p, seg) in plan.iter().zip(segs.iter_mut()) {
            let heads = |x: &Tensor, n: usize| -> Result<Tensor> {
                x.narrow(1, p.offset, p.len)?.reshape((1, p.len, n, self.head_dim))?.transpose(1, 2)?.contiguous()
            };
            let q = candle_nn::rotary_emb::rope(&heads(&q, self.n_head)?, &p.cos, &p.sin)?;
            let k = candle_nn::rotary_emb::rope(&heads(&k, self.n_kv_head)?, &p.cos, &p.sin)?;
            let v = heads(&v, self.n_kv_head)?;
            let (k, v) = seg.cache.kv[layer].append(&k, &v)?;
            let (k, v) = (super::ops::repeat_heads(&k.contiguous()?, group)?, super::ops::repeat_heads(&v.contiguous()?, group)?);
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = match &p.mask {
                Some(m) => att.broadcast_add(m)?,
                None => att,
            };
            let y = candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)?;
            ys.push(super::ops::swap_heads(&y)?.reshape((1, p.len, self.n_head * self.head_dim))?);
        }
        let y = Tensor::cat(&ys, 1)?;
        pass.last_linear(&self.o, &y, || format!("{prefix}.self_attn.o_proj"))
    }

    /// [`Attention::forward_segments`] on the CPU in f32 ([`super::attend`]): RoPE over all
    /// rows at once, each segment's keys and values appended to its cache, one fused
    /// attention over every segment.
    #[allow(clippy::too_many_arguments)]
    fn forward_segments_fused(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        plan: &[SegmentPlan],
        segs: &mut [Segment<'_>],
        layer: usize,
        pass: Pass<'_>,
    ) -> Result<Tensor> {
        let tables: Vec<(usize, &Tensor, &Tensor)> = plan.iter().map(|p| (p.offset, &p.cos, &p.sin)).collect();
        let q = super::attend::rope(q, self.n_head, &tables)?;
        let k = super::attend::rope(k, self.n_kv_head, &tables)?;
        let mut parts = Vec::with_capacity(plan.len());
        for (p, seg) in plan.iter().zip(segs.iter_mut()) {
            let heads = |x: &Tensor| -> Result<Tensor> {
                x.narrow(1, p.offset, p.len)?.reshape((1, p.len, self.n_kv_head, self.head_dim))?.transpose(1, 2)?.contiguous()
            };
            let (k, v) = seg.cache.kv[layer].append(&heads(&k)?, &heads(v)?)?;
            parts.push(super::attend::Part { offset: p.offset, len: p.len, k, v });
        }
        let y = super::attend::batched(&q, self.n_head, &parts, (1.0 / (self.head_dim as f64).sqrt()) as f32)?;
        pass.last_linear(&self.o, &y, || format!("model.layers.{layer}.self_attn.o_proj"))
    }
}

impl Attention {
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Mask>,
        cache: &mut Option<(Tensor, Tensor)>,
        pass: Pass<'_>,
        prefix: &str,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let shape = |h| (b, t, h, self.head_dim);
        let name = |m: &'static str| move || format!("{prefix}.self_attn.{m}");
        let [q, k, v] = self.qkv(x, pass, prefix)?;
        let q = q.reshape(shape(self.n_head))?;
        let k = k.reshape(shape(self.n_kv_head))?;
        let v = super::ops::swap_heads(&v.reshape(shape(self.n_kv_head))?)?;
        // (batch, seq, heads, head_dim) → rotated (batch, heads, seq, head_dim)
        let rope = |x: Tensor| {
            if pass.training() {
                super::ops::rope_heads(&x, cos, sin)
            } else {
                candle_nn::rotary_emb::rope(&x.transpose(1, 2)?.contiguous()?, cos, sin)
            }
        };
        let q = rope(q)?;
        let k = rope(k)?;
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let group = self.n_head / self.n_kv_head;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let y = if pass.training() {
            match mask {
                // a training pass sees its sequence from the start: the mask is causal (and
                // the key heads are grouped, not repeated)
                Some(m) if q.dim(2)? == k.dim(2)? => super::ops::attention_causal(&q, &k, &v, &m.additive, m.positions.as_ref(), scale)?,
                _ => {
                    let (k, v) = (super::ops::repeat_heads(&k, group)?, super::ops::repeat_heads(&v, group)?);
                    super::ops::attention(&q, &k, &v, mask.map(|m| &m.additive), scale)?
                }
            }
        } else {
            let (k, v) = (super::ops::repeat_heads(&k, group)?, super::ops::repeat_heads(&v, group)?);
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = match mask {
                Some(m) => att.broadcast_add(&m.additive)?,
                None => att,
            };
            candle_nn::ops::softmax_last_dim(&att)?.matmul(&v)?
        };
        let y = super::ops::swap_heads(&y)?.reshape((b, t, self.n_head * self.head_dim))?;
        pass.last_linear(&self.o, &y, name("o_proj"))
    }
}

impl Block {
    /// `x` through block `i`: attention and MLP, each after its norm and added back.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Mask>,
        kv: &mut Option<(Tensor, Tensor)>,
        pass: Pass<'_>,
        i: usize,
    ) -> Result<Tensor> {
        let x = self.attention_half(x, cos, sin, mask, kv, pass, i)?;
        self.mlp_half(&x, pass, i)
    }

    /// The block's first half: `x` plus attention after the input norm.
    #[allow(clippy::too_many_arguments)]
    fn attention_half(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Mask>,
        kv: &mut Option<(Tensor, Tensor)>,
        pass: Pass<'_>,
        i: usize,
    ) -> Result<Tensor> {
        x + self.attn.forward(&self.input_norm.forward(x, pass)?, cos, sin, mask, kv, pass, &format!("model.layers.{i}"))?
    }

    /// The block's second half: `x` plus the MLP after the post-attention norm.
    fn mlp_half(&self, x: &Tensor, pass: Pass<'_>, i: usize) -> Result<Tensor> {
        x + self.mlp.forward(&self.post_norm.forward(x, pass)?, pass, &format!("model.layers.{i}"))?
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor, pass: Pass<'_>, prefix: &str) -> Result<Tensor> {
        let name = |m: &'static str| move || format!("{prefix}.mlp.{m}");
        let [gate, up]: [Tensor; 2] = pass
            .linear_shared(&[(&self.gate, "gate_proj"), (&self.up, "up_proj")], x, &format!("{prefix}.mlp"))?
            .try_into()
            .map_err(|_| candle_core::Error::Msg("gate, up: two products expected".into()))?;
        let h = if pass.training() { super::ops::swiglu(&gate, &up)? } else { (candle_nn::ops::silu(&gate)? * up)? };
        pass.last_linear(&self.down, &h, name("down_proj"))
    }
}

impl Llama {
    /// Builds the model from weights named as in Hugging Face checkpoints.
    pub(crate) fn load(config: Config, w: &mut dyn Weights, device: &Device) -> std::result::Result<Self, super::ModelError> {
        use super::CandleContext;
        let norm = |w: &mut dyn Weights, name: &str| -> std::result::Result<RmsNorm, super::ModelError> {
            Ok(RmsNorm { weight: w.dense(name)?, eps: config.rms_norm_eps as f32 })
        };
        let mut blocks = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let bias = match config.family.qkv_bias() {
                true => Some([
                    w.dense(&format!("{p}.self_attn.q_proj.bias"))?,
                    w.dense(&format!("{p}.self_attn.k_proj.bias"))?,
                    w.dense(&format!("{p}.self_attn.v_proj.bias"))?,
                ]),
                false => None,
            };
            blocks.push(Block {
                input_norm: norm(w, &format!("{p}.input_layernorm.weight"))?,
                attn: Attention {
                    q: w.linear(&format!("{p}.self_attn.q_proj"))?,
                    k: w.linear(&format!("{p}.self_attn.k_proj"))?,
                    v: w.linear(&format!("{p}.self_attn.v_proj"))?,
                    o: w.linear(&format!("{p}.self_attn.o_proj"))?,
                    bias,
                    qkv: None,
                    n_head: config.num_attention_heads,
                    n_kv_head: config.num_key_value_heads,
                    head_dim: config.head_dim(),
                },
                post_norm: norm(w, &format!("{p}.post_attention_layernorm.weight"))?,
                mlp: Mlp {
                    gate: w.linear(&format!("{p}.mlp.gate_proj"))?,
                    up: w.linear(&format!("{p}.mlp.up_proj"))?,
                    down: w.linear(&format!("{p}.mlp.down_proj"))?,
                    gate_up: None,
                },
            });
        }
        let lm_head = if w.has("lm_head") && !config.tie_word_embeddings { w.linear("lm_head")? } else { w.linear("model.embed_tokens")? };
        let embed = w.dense("model.embed_tokens.weight")?;
        let (cos, sin) = rope_tables(&config, device).ctx(|| "RoPE tables".into())?;
        Ok(Llama {
            norm: norm(w, "model.norm.weight")?,
            config,
            embed,
            blocks,
            lm_head,
            cos,
            sin,
            device: device.clone(),
            compute: DType::F32,
        })
    }

    /// Merges a LoRA adapter into the weights it targets; returns how many modules changed.
    /// A module the adapter names that this model lacks is an error.
    pub fn merge_adapter(&mut self, adapter: &super::Adapter) -> std::result::Result<usize, super::ModelError> {
        let mut merged = 0;
        for (i, block) in self.blocks.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            let slots: [(&str, &mut Linear); 7] = [
                ("self_attn.q_proj", &mut block.attn.q),
                ("self_attn.k_proj", &mut block.attn.k),
                ("self_attn.v_proj", &mut block.attn.v),
                ("self_attn.o_proj", &mut block.attn.o),
                ("mlp.gate_proj", &mut block.mlp.gate),
                ("mlp.up_proj", &mut block.mlp.up),
                ("mlp.down_proj", &mut block.mlp.down),
            ];
            let before = merged;
            for (name, linear) in slots {
                if let Some(new) = adapter.merge(&format!("{p}.{name}"), linear)? {
                    *linear = new;
                    merged += 1;
                }
            }
            if merged > before {
                // the joined layers hold the weights as they were
                block.attn.qkv = None;
                block.mlp.gate_up = None;
            }
        }
        if merged != adapter.len() {
            return Err(self.unknown_modules(adapter.modules()));
        }
        Ok(merged)
    }

    /// The linear layer an adapter's `module` names (`model.layers.3.self_attn.q_proj`): the
    /// seven projections of each block, nothing else.
    pub(crate) fn adapted_layer(&self, module: &str) -> Option<&Linear> {
        let (i, name) = module.strip_prefix("model.layers.")?.split_once('.')?;
        let b = self.blocks.get(i.parse::<usize>().ok()?)?;
        Some(match name {
            "self_attn.q_proj" => &b.attn.q,
            "self_attn.k_proj" => &b.attn.k,
            "self_attn.v_proj" => &b.attn.v,
            "self_attn.o_proj" => &b.attn.o,
            "mlp.gate_proj" => &b.mlp.gate,
            "mlp.up_proj" => &b.mlp.up,
            "mlp.down_proj" => &b.mlp.down,
            _ => return None,
        })
    }

    /// The error for an adapter whose modules this model lacks, naming them.
    pub(crate) fn unknown_modules<'m>(&self, modules: impl Iterator<Item = &'m String>) -> super::ModelError {
        let mut unknown: Vec<&str> = modules.filter(|m| self.adapted_layer(m).is_none()).map(String::as_str).collect();
        unknown.sort_unstable();
        super::ModelError::Format {
            path: "adapter".into(),
            message: format!("the adapter targets modules this model does not have: {}", unknown.join(", ")),
        }
    }

    /// The dtype activations flow in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Every weight (and bias) under its Hugging Face name, dense f32 (the output layer only
    /// when it is not tied to the embeddings).
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let mut out = vec![
            ("model.embed_tokens.weight".to_owned(), f32(self.embed.clone())?),
            ("model.norm.weight".to_owned(), f32(self.norm.weight.clone())?),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.input_layernorm.weight"), f32(b.input_norm.weight.clone())?));
            out.push((format!("{p}.post_attention_layernorm.weight"), f32(b.post_norm.weight.clone())?));
            if let Some(bias) = &b.attn.bias {
                for (name, t) in ["q_proj", "k_proj", "v_proj"].iter().zip(bias) {
                    out.push((format!("{p}.self_attn.{name}.bias"), f32(t.clone())?));
                }
            }
            for (name, l) in [
                ("self_attn.q_proj", &b.attn.q),
                ("self_attn.k_proj", &b.attn.k),
                ("self_attn.v_proj", &b.attn.v),
                ("self_attn.o_proj", &b.attn.o),
                ("mlp.gate_proj", &b.mlp.gate),
                ("mlp.up_proj", &b.mlp.up),
                ("mlp.down_proj", &b.mlp.down),
            ] {
                out.push((format!("{p}.{name}.weight"), f32(l.weight()?)?));
            }
        }
        if !self.config.tie_word_embeddings {
            out.push(("lm_head.weight".to_owned(), f32(self.lm_head.weight()?)?));
        }
        Ok(out)
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Keeps a copy of every weight for steps over many rows (a batch of sequences), beside
    /// the layer that serves a few: on a CPU with AMX (computing in f32), every weight packed
    /// for bf16 tile products, 2 bytes per parameter ([`Linear::Tiles`]); elsewhere a dense copy
    /// of each GGUF-quantized weight, in the compute dtype ([`Linear::Resident`]: the quantized
    /// kernels stream the weight once per row): 4 bytes per parameter more on the CPU (f32), 2
    /// on a GPU computing in bf16.
    pub fn keep_dense_copies(&mut self) -> Result<()> {
        let dtype = self.compute;
        let keep = |l: &mut Linear| -> Result<()> {
            let taken = std::mem::replace(l, Linear::Dense(Tensor::zeros(0, DType::F32, &Device::Cpu)?));
            *l = taken.with_dense_copy(dtype)?;
            Ok(())
        };
        for b in &mut self.blocks {
            for l in [&mut b.attn.q, &mut b.attn.k, &mut b.attn.v, &mut b.attn.o, &mut b.mlp.gate, &mut b.mlp.up, &mut b.mlp.down] {
                keep(l)?;
            }
        }
        keep(&mut self.lm_head)
    }

    /// Stores every dense weight (the embeddings, dense and merged layers, a dense output
    /// layer) in the compute dtype: a pass in bf16 then reads 2 bytes per parameter and casts
    /// nothing per step (a server's weights, which never train). Quantized layers stay as they
    /// are. With the fused CUDA step on, dense q/k/v and gate/up are also joined into one
    /// weight each (`join`), for its products.
    pub fn store_dense_in_compute_dtype(&mut self) -> Result<()> {
        let dtype = self.compute;
        let cast = |l: &mut Linear| -> Result<()> {
            if let Linear::Dense(w) = l
                && w.dtype() != dtype
            {
                *w = w.to_dtype(dtype)?;
            }
            Ok(())
        };
        for b in &mut self.blocks {
            for l in [&mut b.attn.q, &mut b.attn.k, &mut b.attn.v, &mut b.attn.o, &mut b.mlp.gate, &mut b.mlp.up, &mut b.mlp.down] {
                cast(l)?;
            }
        }
        cast(&mut self.lm_head)?;
        self.embed = self.embed.to_dtype(dtype)?;
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() && step::enabled() {
            self.join_shared_products()?;
        }
        Ok(())
    }

    /// Joins each block's dense q/k/v, and gate/up, into one weight (`join`) for the CUDA
    /// step's products.
    #[cfg(feature = "cuda")]
    fn join_shared_products(&mut self) -> Result<()> {
        for b in &mut self.blocks {
            if b.attn.bias.is_none() {
                b.attn.qkv = join(&mut [&mut b.attn.q, &mut b.attn.k, &mut b.attn.v])?;
            }
            b.mlp.gate_up = join(&mut [&mut b.mlp.gate, &mut b.mlp.up])?;
        }
        Ok(())
    }

    /// Activations in `dtype` from the embeddings on (bf16 on a GPU halves their memory and
    /// runs the products on bf16 tensor cores); logits and losses stay f32.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
    }

    /// Logits of every position of `ids` (batch, seq), continuing after what `cache` holds:
    /// shape (batch, seq, vocab), f32.
    pub fn forward(&self, ids: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        self.forward_pass(ids, cache, Pass::Infer)
    }

    /// One step over several sequences at once (continuous batching): each segment's tokens
    /// continue its own cache, prompt chunks and single sampled tokens mixed. The linear
    /// layers run once over every row; attention runs per sequence (on the CPU in f32, and on
    /// CUDA, unless `MEDTUNE_CUDA_STEP=0`, every sequence in one fused call). Returns the logits
    /// of each segment's last token, (segments, vocab), f32.
    pub fn forward_segments(&self, segs: &mut [Segment<'_>]) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        let fused = self.device.is_cuda() && step::enabled();
        #[cfg(not(feature = "cuda"))]
        let fused = false;
        self.step(segs, fused)
    }

    /// [`Llama::forward_segments`], on CUDA through the fused kernels when `fused`.
    fn step(&self, segs: &mut [Segment<'_>], fused: bool) -> Result<Tensor> {
        let ids: Vec<u32> = segs.iter().flat_map(|s| s.ids.iter().copied()).collect();
        if ids.is_empty() || segs.iter().any(|s| s.ids.is_empty()) {
            candle_core::bail!("a batched step needs at least one token per segment");
        }
        if let Some(w) = self.config.sliding_window
            && let Some(s) = segs.iter().find(|s| s.cache.len() + s.ids.len() > w)
        {
            candle_core::bail!("a sequence of {} tokens is longer than the model's sliding window of {w}", s.cache.len() + s.ids.len());
        }
        let rows = self.row_lora(segs)?;
        let pass = rows.as_ref().map_or(Pass::Batch, Pass::Rows);
        #[cfg(feature = "cuda")]
        if fused {
            return self.forward_segments_cuda(segs, &ids, pass);
        }
        #[cfg(not(feature = "cuda"))]
        let _ = fused;
        let dt = self.compute;
        let mut plan = Vec::with_capacity(segs.len());
        let mut offset = 0;
        for s in segs.iter() {
            let (len, pos) = (s.ids.len(), s.cache.len());
            // the CPU's fused attention in f32 masks by position itself
            let mask = match len > 1 && !(self.device.is_cpu() && dt == DType::F32) {
                true => Some(causal_mask(len, pos, &self.device)?.to_dtype(dt)?),
                false => None,
            };
            plan.push(SegmentPlan {
                offset,
                len,
                cos: self.cos.narrow(0, pos, len)?.to_dtype(dt)?,
                sin: self.sin.narrow(0, pos, len)?.to_dtype(dt)?,
                mask,
            });
            offset += len;
        }
        let mut x = self
            .embed
            .index_select(&Tensor::new(ids.as_slice(), &self.device)?, 0)?
            .reshape((1, ids.len(), self.config.hidden_size))?
            .to_dtype(dt)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let h = block.input_norm.forward(&x, pass)?;
            x = (x + block.attn.forward_segments(&h, &plan, segs, i, pass)?)?;
            x = block.mlp_half(&x, pass, i)?;
        }
        let last: Vec<u32> = plan.iter().map(|p| (p.offset + p.len - 1) as u32).collect();
        let h = x.squeeze(0)?.index_select(&Tensor::new(last.as_slice(), &self.device)?, 0)?.unsqueeze(0)?;
        let h = self.norm.forward(&h, Pass::Infer)?;
        self.lm_head.forward_batched(&h)?.squeeze(0)?.to_dtype(DType::F32)
    }

    /// The segments' adapters as groups of rows (one per adapter), or none when no segment
    /// has one.
    fn row_lora<'s>(&self, segs: &[Segment<'s>]) -> Result<Option<RowLora<'s>>> {
        let mut groups: Vec<(Vec<u32>, &'s super::Lora)> = Vec::new();
        let mut offset = 0;
        for s in segs {
            let start = offset;
            offset += s.ids.len();
            let Some(lora) = s.lora else { continue };
            let rows = (start as u32)..(offset as u32);
            match groups.iter_mut().find(|(_, l)| std::ptr::eq(*l, lora)) {
                Some((r, _)) => r.extend(rows),
                None => groups.push((rows.collect(), lora)),
            }
        }
        if groups.is_empty() {
            return Ok(None);
        }
        RowLora::batched(groups, offset, &self.device).map(Some)
    }

    /// [`Llama::logits_at`] of the weights as loaded with `lora`'s updates added unmerged.
    pub fn logits_at_unmerged(&self, ids: &Tensor, last: &Tensor, lora: &super::Lora) -> Result<Tensor> {
        self.logits_at_pass(ids, last, Pass::Rows(&RowLora::all(lora)))
    }

    /// Logits of every position of `ids` through ops that pass gradients, with `adapters`'
    /// updates: the training forward pass.
    pub fn forward_train(&self, ids: &Tensor, adapters: &dyn Adapters) -> Result<Tensor> {
        self.project(&self.hidden_train(ids, None, adapters)?)
    }

    /// The final hidden states (after the last norm) of the training pass, (batch, seq,
    /// hidden): pick the positions that carry a loss, then [`Llama::project`] only those.
    /// `positions` packs several examples into a row ([`Llama::backward_recomputed`]).
    pub fn hidden_train(&self, ids: &Tensor, positions: Option<&Tensor>, adapters: &dyn Adapters) -> Result<Tensor> {
        self.hidden(ids, positions, &mut Cache::new(self), Pass::Train(adapters))
    }

    /// Logits (n, vocab) at the flat positions `last` (row × width + column) of `ids`
    /// (batch, width), without a cache; through `adapters` when given (no gradients needed).
    pub fn logits_at(&self, ids: &Tensor, last: &Tensor, adapters: Option<&dyn Adapters>) -> Result<Tensor> {
        self.logits_at_pass(ids, last, adapters.map_or(Pass::Infer, Pass::Train))
    }

    /// [`Llama::logits_at`] through `pass`.
    fn logits_at_pass(&self, ids: &Tensor, last: &Tensor, pass: Pass<'_>) -> Result<Tensor> {
        let h = self.hidden(ids, None, &mut Cache::new(self), pass)?;
        let (b, t, d) = h.dims3()?;
        let picked = h.reshape((b * t, d))?.index_select(last, 0)?;
        // a few rows: quantized kernels would round the activations too; the dense product
        // keeps these logits equal to a merged f32 checkpoint's
        let w = self.lm_head.weight()?.to_dtype(picked.dtype())?;
        picked.detach().matmul(&w.t()?)?.to_dtype(DType::F32)
    }

    /// The mean next-token cross-entropy of final hidden states `h` (n, hidden) against
    /// `targets` (n), through the frozen output layer in chunks of 4,096 rows
    /// ([`super::ops::cross_entropy`]): the loss of every position without whole logits.
    pub fn next_token_loss(&self, h: &Tensor, targets: &Tensor) -> Result<Tensor> {
        super::ops::cross_entropy(h, &self.lm_head.weight()?, targets, 4096)
    }

    /// Logits of hidden states (any leading shape), f32, through the frozen output layer.
    pub fn project(&self, h: &Tensor) -> Result<Tensor> {
        self.lm_head.forward_frozen(h)?.to_dtype(DType::F32)
    }

    /// Replaces every linear layer of the blocks with NF4 (double quantization) that
    /// dequantizes to `dtype`; returns the bytes the layers now hold. The output layer and the
    /// embeddings are not quantized (as in QLoRA); dense ones are stored in `dtype`, which the
    /// pass casts them to anyway (a 7B model's two f32 tables were 1 GiB, and the output
    /// layer's bf16 copy another 0.25 GiB per step).
    pub fn quantize_nf4(&mut self, dtype: DType) -> Result<usize> {
        let mut layers: Vec<&mut Linear> = self
            .blocks
            .iter_mut()
            .flat_map(|b| [&mut b.attn.q, &mut b.attn.k, &mut b.attn.v, &mut b.attn.o, &mut b.mlp.gate, &mut b.mlp.up, &mut b.mlp.down])
            .collect();
        // Every layer is a task for a pool of one thread per core (on the CPU), taken in
        // order: a block at a time left most cores idle behind its three big layers.
        let weights: Vec<Tensor> = layers.iter().map(|l| l.weight()).collect::<Result<_>>()?;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(1, usize::from).min(weights.len().max(1));
        let mut quantized: Vec<(usize, Result<crate::quant::Nf4Weight>)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(w) = weights.get(i) else { break done };
                            done.push((i, crate::quant::Nf4Weight::quantize(w, dtype)));
                        }
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in workers {
                all.extend(h.join().map_err(|_| candle_core::Error::Msg("NF4 quantization panicked".into()))?);
            }
            Ok::<_, candle_core::Error>(all)
        })?;
        quantized.sort_by_key(|(i, _)| *i);
        let mut bytes = 0;
        for (l, (_, q)) in layers.iter_mut().zip(quantized) {
            let q = q?;
            bytes += q.bytes();
            **l = Linear::Nf4(q);
        }
        self.embed = self.embed.to_dtype(dtype)?;
        if let Linear::Dense(w) = &mut self.lm_head {
            *w = w.to_dtype(dtype)?;
        }
        Ok(bytes)
    }

    fn forward_pass(&self, ids: &Tensor, cache: &mut Cache, pass: Pass<'_>) -> Result<Tensor> {
        self.lm_head.forward(&self.hidden(ids, None, cache, pass)?)?.to_dtype(DType::F32)
    }

    /// What the blocks take for `ids` at positions from `pos` on: the embeddings, the RoPE
    /// tables and the causal mask (none for one position), in the compute dtype. Packed rows
    /// (`positions`, (batch, seq) u32: each token's position in its own example; `pos` 0)
    /// take the tables at those positions, (batch, seq, head_dim / 2), and a block-diagonal
    /// causal mask.
    fn block_inputs(&self, ids: &Tensor, pos: usize, positions: Option<&Tensor>) -> Result<(Tensor, Tensor, Tensor, Option<Mask>)> {
        let (b, t) = ids.dims2()?;
        if let Some(w) = self.config.sliding_window
            && pos + t > w
        {
            candle_core::bail!(
                "a sequence of {} tokens is longer than the model's sliding window of {w}: attention beyond the window is not implemented",
                pos + t
            );
        }
        let dt = self.compute;
        let x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.config.hidden_size))?.to_dtype(dt)?;
        if let Some(p) = positions {
            if pos != 0 || p.dims2()? != (b, t) {
                candle_core::bail!("packed positions {:?} for ids ({b}, {t}) after {pos} cached", p.shape());
            }
            let at = |table: &Tensor| table.index_select(&p.flatten_all()?, 0)?.reshape((b, t, ()))?.to_dtype(dt);
            let additive = super::ops::packed_mask(p)?.to_dtype(dt)?;
            return Ok((x, at(&self.cos)?, at(&self.sin)?, Some(Mask { additive, positions: Some(p.clone()) })));
        }
        let cos = self.cos.narrow(0, pos, t)?.to_dtype(dt)?;
        let sin = self.sin.narrow(0, pos, t)?.to_dtype(dt)?;
        let mask = match t > 1 {
            true => Some(Mask { additive: causal_mask(t, pos, &self.device)?.to_dtype(dt)?, positions: None }),
            false => None,
        };
        Ok((x, cos, sin, mask))
    }

    fn hidden(&self, ids: &Tensor, positions: Option<&Tensor>, cache: &mut Cache, pass: Pass<'_>) -> Result<Tensor> {
        let (mut x, cos, sin, mask) = self.block_inputs(ids, cache.len(), positions)?;
        for (i, (block, kv)) in self.blocks.iter().zip(cache.kv.iter_mut()).enumerate() {
            x = block.forward(&x, &cos, &sin, mask.as_ref(), kv, pass, i)?;
        }
        self.norm.forward(&x, pass)
    }

    /// The training pass and its backward with each block half recomputed (the memory mode,
    /// as gradient checkpointing): forward keeps only the halves' inputs (each block's input
    /// and its residual after attention); backward runs each half again, last first, with
    /// gradients, and backpropagates from its output with the known output gradient
    /// ([`super::ops::seed_gradient`]), carrying the gradient of its input to the half before.
    /// A recomputed half's output value is never used, so its last product (o, down) passes
    /// gradients without computing its value ([`Pass::Recompute`]). `loss` maps the
    /// final hidden states (batch, seq, hidden) to the scalar loss. Returns the loss and the
    /// gradients of `vars` (the adapters'), as one backward of [`Llama::hidden_train`] would:
    /// the same values, with one half's intermediates alive at a time instead of every
    /// block's. The adapters must give the same values when a half runs twice (dropout masks
    /// drawn from a seed, not a device generator).
    ///
    /// `positions` (batch, seq), u32, packs several examples into each row: every token's
    /// position in its own example. Each example then gets its own RoPE positions and sees
    /// only its own tokens, so it computes what it would alone.
    pub fn backward_recomputed(
        &self,
        ids: &Tensor,
        positions: Option<&Tensor>,
        adapters: &dyn Adapters,
        vars: &[candle_core::Var],
        loss: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, candle_core::backprop::GradStore)> {
        let (x, cos, sin, mask) = self.block_inputs(ids, 0, positions)?;
        // half s: block s / 2, attention when s is even, the MLP when odd
        let run = |s: usize, x: &Tensor, pass: Pass<'_>| match s % 2 {
            0 => self.blocks[s / 2].attention_half(x, &cos, &sin, mask.as_ref(), &mut None, pass, s / 2),
            _ => self.blocks[s / 2].mlp_half(x, pass, s / 2),
        };
        let halves = 2 * self.blocks.len();
        let mut inputs = Vec::with_capacity(halves);
        let mut x = x.detach();
        for s in 0..halves {
            // the half's graph goes with its output: only the detached value is kept
            let y = run(s, &x, Pass::Train(adapters))?.detach();
            inputs.push(std::mem::replace(&mut x, y));
        }
        let last = candle_core::Var::from_tensor(&x)?;
        let value = loss(&self.norm.forward(last.as_tensor(), Pass::Train(adapters))?)?;
        let mut store = value.backward()?;
        let mut grad =
            store.remove(last.as_tensor()).ok_or_else(|| candle_core::Error::Msg("no gradient reaches the last block".into()))?;
        for (s, input) in inputs.into_iter().enumerate().rev() {
            let input = candle_core::Var::from_tensor(&input)?;
            let y = run(s, input.as_tensor(), Pass::Recompute(adapters))?;
            // backward from y with g = dL/dy gives the half's share of dL/dθ (as Σ y ⊙ g would,
            // without its product and sum: the sums alone were 17% of a 7B 8x1024 step's GPU time)
            let mut inner = super::ops::seed_gradient(&y, grad.detach())?.backward()?;
            for v in vars {
                if let Some(g) = inner.remove(v.as_tensor()) {
                    let sum = match store.remove(v.as_tensor()) {
                        Some(acc) => (acc + g)?,
                        None => g,
                    };
                    store.insert(v.as_tensor(), sum);
                }
            }
            grad = inner.remove(input.as_tensor()).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "no gradient reaches block {}'s {} input",
                    s / 2,
                    if s % 2 == 0 { "attention" } else { "MLP" }
                ))
            })?;
        }
        Ok((value, store))
    }
}

fn rope_tables(c: &Config, device: &Device) -> Result<(Tensor, Tensor)> {
    let inv = c.inv_freq();
    let inv = Tensor::from_vec(inv.clone(), (1, inv.len()), device)?;
    let t =
        Tensor::arange(0u32, c.max_position_embeddings as u32, device)?.to_dtype(DType::F32)?.reshape((c.max_position_embeddings, 1))?;
    let freqs = t.matmul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// The attention mask of a pass: additive (0 where a query may look, -inf elsewhere), and for
/// packed rows the positions it was made from (the CUDA kernel reads those instead).
struct Mask {
    additive: Tensor,
    positions: Option<Tensor>,
}

/// Additive mask (t, pos + t): 0 where a query may look, -inf after it.
fn causal_mask(t: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t).flat_map(|i| (0..pos + t).map(move |j| if j > i + pos { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (1, 1, t, pos + t), device)
}
