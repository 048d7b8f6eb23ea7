//! Micro-batches of examples and the answer-token loss: prompts right-padded into one id
//! tensor (causal attention never lets a real token see the padding after it), the hidden
//! state of each prompt's last token projected to logits (the full (batch, seq, vocab)
//! logits are never made), cross-entropy against the answer token, optionally weighted by
//! class.

use candle_core::{DType, Device, Result, Tensor, D};

use crate::model::Llama;

use super::examples::Example;

/// A padded micro-batch.
pub struct Batch {
    /// (batch, longest prompt) token ids.
    pub ids: Tensor,
    /// The flat index (row × width + last position) of each prompt's last token.
    pub last: Tensor,
    /// The answer token of each example.
    pub targets: Tensor,
    /// Each example's loss weight.
    pub weights: Tensor,
    /// Real (unpadded) tokens.
    pub tokens: usize,
}

impl Batch {
    /// Pads `examples`; `label_tokens` maps labels to answer tokens, `class_weights` labels to
    /// loss weights.
    pub fn new(examples: &[&Example], label_tokens: &[u32; 3], class_weights: &[f64; 3], pad: u32, device: &Device) -> Result<Self> {
        let width = examples.iter().map(|e| e.prompt.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(examples.len() * width);
        let mut last = Vec::with_capacity(examples.len());
        for (row, e) in examples.iter().enumerate() {
            ids.extend_from_slice(&e.prompt);
            ids.extend(std::iter::repeat_n(pad, width - e.prompt.len()));
            last.push((row * width + e.prompt.len() - 1) as u32);
        }
        let targets: Vec<u32> = examples.iter().map(|e| label_tokens[e.label]).collect();
        let weights: Vec<f32> = examples.iter().map(|e| class_weights[e.label] as f32).collect();
        Ok(Self {
            ids: Tensor::from_vec(ids, (examples.len(), width), device)?,
            last: Tensor::new(last.as_slice(), device)?,
            targets: Tensor::new(targets.as_slice(), device)?,
            weights: Tensor::new(weights.as_slice(), device)?,
            tokens: examples.iter().map(|e| e.prompt.len() + 1).sum(),
        })
    }

    /// Logits (batch, vocab) at each prompt's last token.
    pub fn answer_logits(&self, model: &Llama, adapters: &dyn crate::model::Adapters) -> Result<Tensor> {
        self.answer_logits_of(model, &model.hidden_train(&self.ids, adapters)?)
    }

    /// [`Batch::answer_logits`] from the final hidden states `h` (batch, seq, hidden).
    pub fn answer_logits_of(&self, model: &Llama, h: &Tensor) -> Result<Tensor> {
        let (b, t, d) = h.dims3()?;
        let picked = h.reshape((b * t, d))?.index_select(&self.last, 0)?;
        model.project(&picked)
    }

    /// The weighted mean cross-entropy of the answer tokens: Σ wᵢ·nllᵢ / Σ wᵢ.
    pub fn loss(&self, logits: &Tensor) -> Result<Tensor> {
        let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
        let nll = logp.gather(&self.targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
        (nll * &self.weights)?.sum_all()? / f64::from(self.weights.sum_all()?.to_scalar::<f32>()?)
    }
}
