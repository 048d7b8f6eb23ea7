//! Micro-batches of examples and their loss: prompts right-padded into one id tensor (causal
//! attention never lets a real token see the padding after it), the hidden state of each
//! prompt's last token projected to logits (the full (batch, seq, vocab) logits are never
//! made), cross-entropy against the answer token over the vocabulary or over the label set's
//! answers (those a question offers: a multiple-choice question with fewer options than the set
//! has the others masked), optionally weighted by class; and, for examples that carry a conclusion, the
//! mean cross-entropy of its tokens written after the answer.

use candle_core::{D, DType, Device, Result, Tensor};

use crate::model::Llama;

use super::examples::Example;

/// What a batch's loss counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossOptions {
    /// The answer's cross-entropy over the answer tokens only (the choice evaluation reads)
    /// instead of over the whole vocabulary.
    pub choice: bool,
    /// Weight of the conclusion tokens' mean cross-entropy, added to the answer's.
    pub conclusion_weight: f64,
}

/// A padded micro-batch.
pub struct Batch {
    /// (batch, longest sequence) token ids: each prompt, then, for an example with a
    /// conclusion, its answer token and the conclusion.
    pub ids: Tensor,
    /// For packed rows: (batch, longest sequence) u32, each token's position in its own
    /// example (the padding after a row's last example goes on counting). `None` when no row
    /// is packed.
    pub positions: Option<Tensor>,
    /// The flat index (row × width + last position) of each prompt's last token.
    pub last: Tensor,
    /// The answer token of each example.
    pub targets: Tensor,
    /// The answer's index into the answer tokens, of each example.
    pub labels: Tensor,
    /// (batch, labels): 0 for the answers each question offers, a large negative number for
    /// the others; `None` when every question offers every answer.
    pub offered: Option<Tensor>,
    /// Each example's loss weight.
    pub weights: Tensor,
    /// Real (unpadded) tokens.
    pub tokens: usize,
    /// The flat positions whose next token is a conclusion token, and those tokens; `None`
    /// when no example has a conclusion or its weight is 0.
    pub conclusion: Option<(Tensor, Tensor)>,
    label_tokens: Tensor,
    opts: LossOptions,
    /// A batch of sequences (a `generate` task): the loss is the mean cross-entropy of their
    /// target tokens alone (`conclusion` holds them).
    sequence: bool,
}

impl Batch {
    /// Pads `examples`; `label_tokens` maps labels to answer tokens, `class_weights` labels to
    /// loss weights.
    pub fn new(
        examples: &[&Example],
        label_tokens: &[u32],
        class_weights: &[f64],
        pad: u32,
        opts: LossOptions,
        device: &Device,
    ) -> Result<Self> {
        if examples.iter().any(|e| !e.targets.is_empty()) {
            return Self::sequences(examples, pad, opts, device);
        }
        let with_conclusion = |e: &Example| opts.conclusion_weight > 0.0 && !e.conclusion.is_empty();
        let len = |e: &Example| sequence_len(e, opts);
        let width = examples.iter().map(|e| len(e)).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(examples.len() * width);
        let mut last = Vec::with_capacity(examples.len());
        let (mut at, mut next) = (Vec::new(), Vec::new());
        for (row, e) in examples.iter().enumerate() {
            ids.extend_from_slice(&e.prompt);
            if with_conclusion(e) {
                ids.push(label_tokens[e.label]);
                ids.extend_from_slice(&e.conclusion);
                // the answer token predicts the conclusion's first token, and so on
                at.extend((0..e.conclusion.len()).map(|j| (row * width + e.prompt.len() + j) as u32));
                next.extend_from_slice(&e.conclusion);
            }
            ids.extend(std::iter::repeat_n(pad, width - len(e)));
            last.push((row * width + e.prompt.len() - 1) as u32);
        }
        let targets: Vec<u32> = examples.iter().map(|e| label_tokens[e.label]).collect();
        let labels: Vec<u32> = examples.iter().map(|e| e.label as u32).collect();
        let weights: Vec<f32> = examples.iter().map(|e| class_weights[e.label] as f32).collect();
        let n = label_tokens.len();
        let offered = match examples.iter().all(|e| e.offered >= n) {
            true => None,
            false => {
                let mask: Vec<f32> = examples.iter().flat_map(|e| (0..n).map(move |i| if i < e.offered { 0.0 } else { -1e9 })).collect();
                Some(Tensor::from_vec(mask, (examples.len(), n), device)?)
            }
        };
        let conclusion = match at.is_empty() {
            true => None,
            false => Some((Tensor::new(at.as_slice(), device)?, Tensor::new(next.as_slice(), device)?)),
        };
        Ok(Self {
            ids: Tensor::from_vec(ids, (examples.len(), width), device)?,
            positions: None,
            last: Tensor::new(last.as_slice(), device)?,
            targets: Tensor::new(targets.as_slice(), device)?,
            labels: Tensor::new(labels.as_slice(), device)?,
            offered,
            weights: Tensor::new(weights.as_slice(), device)?,
            // prompt, answer and conclusion (the answer is in the ids only before a conclusion)
            tokens: examples.iter().map(|e| e.prompt.len() + 1 + if with_conclusion(e) { e.conclusion.len() } else { 0 }).sum(),
            conclusion,
            label_tokens: Tensor::new(label_tokens, device)?,
            opts,
            sequence: false,
        })
    }

    /// Pads sequence examples (`targets` set): every position whose next token is a target
    /// carries the loss, except an example's first (no token of the example before it
    /// predicts it). Packed rows get their positions.
    fn sequences(examples: &[&Example], pad: u32, opts: LossOptions, device: &Device) -> Result<Self> {
        let width = examples.iter().map(|e| e.prompt.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(examples.len() * width);
        let mut positions: Vec<u32> = Vec::with_capacity(examples.len() * width);
        let (mut at, mut next) = (Vec::new(), Vec::new());
        for (row, e) in examples.iter().enumerate() {
            ids.extend_from_slice(&e.prompt);
            ids.extend(std::iter::repeat_n(pad, width - e.prompt.len()));
            let whole = [e.prompt.len()];
            let segments = if e.segments.is_empty() { &whole[..] } else { &e.segments };
            let mut start = 0;
            for &len in segments {
                positions.extend(0..len as u32);
                for i in start + 1..start + len {
                    if e.targets.get(i).copied().unwrap_or(false) {
                        at.push((row * width + i - 1) as u32);
                        next.push(e.prompt[i]);
                    }
                }
                start += len;
            }
            // the padding continues the last example's positions (it comes after every real token)
            let last = segments.last().map_or(0, |&l| l as u32);
            positions.extend((0..(width - start) as u32).map(|k| last + k));
        }
        let none: &[u32] = &[];
        let packed = examples.iter().any(|e| e.segments.len() > 1);
        Ok(Self {
            ids: Tensor::from_vec(ids, (examples.len(), width), device)?,
            positions: match packed {
                true => Some(Tensor::from_vec(positions, (examples.len(), width), device)?),
                false => None,
            },
            last: Tensor::new(none, device)?,
            targets: Tensor::new(none, device)?,
            labels: Tensor::new(none, device)?,
            offered: None,
            weights: Tensor::new(&[] as &[f32], device)?,
            tokens: examples.iter().map(|e| e.prompt.len()).sum(),
            conclusion: Some((Tensor::new(at.as_slice(), device)?, Tensor::new(next.as_slice(), device)?)),
            label_tokens: Tensor::new(none, device)?,
            opts,
            sequence: true,
        })
    }

    /// The batch's loss from the final hidden states `h` (batch, seq, hidden): the answer's
    /// ([`Batch::loss`]) plus the conclusion's, weighted.
    pub fn loss_of(&self, model: &Llama, h: &Tensor) -> Result<Tensor> {
        let (b, t, d) = h.dims3()?;
        let flat = h.reshape((b * t, d))?;
        if let (true, Some((at, next))) = (self.sequence, &self.conclusion) {
            return nll(&model.project(&flat.index_select(at, 0)?)?, next)?.mean_all();
        }
        let answer = self.loss(&model.project(&flat.index_select(&self.last, 0)?)?)?;
        match &self.conclusion {
            Some((at, next)) => {
                answer + (nll(&model.project(&flat.index_select(at, 0)?)?, next)?.mean_all()? * self.opts.conclusion_weight)?
            }
            None => Ok(answer),
        }
    }

    /// The weighted mean cross-entropy of the answers from the logits (batch, vocab) at each
    /// prompt's last token: Σ wᵢ·nllᵢ / Σ wᵢ, over the vocabulary or over the answers offered.
    pub fn loss(&self, logits: &Tensor) -> Result<Tensor> {
        let nll = match self.opts.choice {
            true => nll(&self.answer_logits(logits)?, &self.labels)?,
            false => nll(logits, &self.targets)?,
        };
        (nll * &self.weights)?.sum_all()? / f64::from(self.weights.sum_all()?.to_scalar::<f32>()?)
    }
}

impl Batch {
    /// The answers' logits (batch, labels) from the logits (batch, vocab), in f32, with the
    /// answers a question does not offer masked.
    pub fn answer_logits(&self, logits: &Tensor) -> Result<Tensor> {
        let picked = logits.index_select(&self.label_tokens, 1)?.to_dtype(DType::F32)?;
        match &self.offered {
            Some(mask) => picked + mask,
            None => Ok(picked),
        }
    }
}

/// The ids an example takes in a batch: its prompt, then, when `opts` counts its conclusion,
/// its answer token and the conclusion.
pub fn sequence_len(e: &Example, opts: LossOptions) -> usize {
    match opts.conclusion_weight > 0.0 && !e.conclusion.is_empty() {
        true => e.prompt.len() + 1 + e.conclusion.len(),
        false => e.prompt.len(),
    }
}

/// The cross-entropy (n) of each of `targets` (n) under `logits` (n, classes), in f32.
fn nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(prompt: &[u32], label: usize, conclusion: &[u32]) -> Example {
        Example { id: String::new(), prompt: prompt.to_vec(), label, offered: 3, conclusion: conclusion.to_vec(), ..Example::default() }
    }

    /// A conclusion follows its answer token in the ids, and its tokens are the targets of the
    /// positions from the answer on; with weight 0 (and for dev and test) the batch is the
    /// plain one.
    #[test]
    fn conclusions_follow_the_answer_and_are_predicted_from_it() {
        let dev = Device::Cpu;
        let labels = [10, 11, 12];
        let examples = [ex(&[1, 2, 3], 1, &[7, 8]), ex(&[4, 5], 0, &[])];
        let refs: Vec<&Example> = examples.iter().collect();
        let opts = LossOptions { choice: false, conclusion_weight: 0.5 };
        let b = Batch::new(&refs, &labels, &[1.0; 3], 0, opts, &dev).expect("batch");
        assert_eq!(b.ids.to_vec2::<u32>().expect("ids"), [[1, 2, 3, 11, 7, 8], [4, 5, 0, 0, 0, 0]]);
        assert_eq!(b.last.to_vec1::<u32>().expect("last"), [2, 7]);
        let (at, next) = b.conclusion.as_ref().expect("conclusion");
        assert_eq!((at.to_vec1::<u32>().expect("at"), next.to_vec1::<u32>().expect("next")), (vec![3, 4], vec![7, 8]));
        assert_eq!(b.tokens, 6 + 3);
        let plain = Batch::new(&refs, &labels, &[1.0; 3], 0, LossOptions::default(), &dev).expect("batch");
        assert_eq!(plain.ids.to_vec2::<u32>().expect("ids"), [[1, 2, 3], [4, 5, 0]]);
        assert!(plain.conclusion.is_none());
        assert_eq!(plain.tokens, 4 + 3);
    }

    /// The choice loss is the cross-entropy over the three answers' logits alone, weighted by
    /// class; the token loss is over the whole vocabulary. Golden values from Python:
    /// `m = max(v); -(v[i] - m - math.log(sum(math.exp(x - m) for x in v)))`.
    #[test]
    fn the_choice_loss_reads_only_the_three_answers() {
        let dev = Device::Cpu;
        let labels = [1, 2, 3];
        let examples = [ex(&[9], 1, &[]), ex(&[9], 0, &[])];
        let refs: Vec<&Example> = examples.iter().collect();
        // vocabulary of 5: token 0 and 4 are not answers
        let logits = Tensor::new(&[[5.0f32, 1.0, 0.0, -1.0, 2.0], [0.0, 2.0, 2.0, 2.0, 0.0]], &dev).expect("logits");
        let loss = |choice: bool, w: [f64; 3]| {
            let b = Batch::new(&refs, &labels, &w, 0, LossOptions { choice, conclusion_weight: 0.0 }, &dev).expect("batch");
            f64::from(b.loss(&logits).expect("loss").to_scalar::<f32>().expect("scalar"))
        };
        // choice: row 0 -log_softmax([1,0,-1])[1] = 1.4076059644, row 1 -log_softmax([2,2,2])[0] = ln 3
        let (r0, r1) = (1.407_605_964_4, 3f64.ln());
        assert!((loss(true, [1.0; 3]) - (r0 + r1) / 2.0).abs() < 1e-5, "{}", loss(true, [1.0; 3]));
        assert!((loss(true, [1.0, 3.0, 1.0]) - (3.0 * r0 + r1) / 4.0).abs() < 1e-5);
        // token: row 0 -log_softmax([5,1,0,-1,2])[2] = 5.0744759247, row 1 -log_softmax([0,2,2,2,0])[1] = 1.1849950301
        let (t0, t1) = (5.074_475_924_7, 1.184_995_030_1);
        assert!((loss(false, [1.0; 3]) - (t0 + t1) / 2.0).abs() < 1e-5, "{}", loss(false, [1.0; 3]));
    }

    /// A sequence example (a `generate` task) puts the loss on the positions whose next token
    /// is a target, and on no other: tokens 3 and 4 of row 0 (an answer) and token 2 of row 1.
    #[test]
    fn sequences_put_the_loss_on_their_target_tokens_only() {
        let dev = Device::Cpu;
        let seq = |ids: &[u32], targets: &[bool]| Example { targets: targets.to_vec(), ..ex(ids, 0, &[]) };
        let examples = [seq(&[1, 2, 3, 4, 5], &[false, false, false, true, true]), seq(&[6, 7, 8], &[false, false, true])];
        let refs: Vec<&Example> = examples.iter().collect();
        let b = Batch::new(&refs, &[], &[], 0, LossOptions::default(), &dev).expect("batch");
        assert_eq!(b.ids.to_vec2::<u32>().expect("ids"), [[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]]);
        let (at, next) = b.conclusion.as_ref().expect("targets");
        assert_eq!(at.to_vec1::<u32>().expect("at"), [2, 3, 6]);
        assert_eq!(next.to_vec1::<u32>().expect("next"), [4, 5, 8]);
        assert_eq!(b.tokens, 8);
    }

    /// A packed row (two examples of 3 and 2 tokens) restarts its positions at each example
    /// and never predicts an example's first token from the one before it: row 0 targets
    /// tokens 3 (from 2) and 5 (from 4), not 4 (the second example's first, from 3); the
    /// padding of row 1 goes on counting from its end.
    #[test]
    fn packed_rows_restart_their_positions_and_never_predict_across_examples() {
        let dev = Device::Cpu;
        let packed =
            Example { prompt: vec![1, 2, 3, 4, 5], targets: vec![false, true, true, true, true], segments: vec![3, 2], ..ex(&[], 0, &[]) };
        let plain = Example { prompt: vec![6, 7, 8], targets: vec![false, false, true], ..ex(&[], 0, &[]) };
        let b = Batch::new(&[&packed, &plain], &[], &[], 0, LossOptions::default(), &dev).expect("batch");
        assert_eq!(b.ids.to_vec2::<u32>().expect("ids"), [[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]]);
        assert_eq!(b.positions.as_ref().expect("positions").to_vec2::<u32>().expect("positions"), [[0, 1, 2, 0, 1], [0, 1, 2, 3, 4]]);
        let (at, next) = b.conclusion.as_ref().expect("targets");
        assert_eq!(at.to_vec1::<u32>().expect("at"), [0, 1, 3, 6]);
        assert_eq!(next.to_vec1::<u32>().expect("next"), [2, 3, 5, 8]);
        let alone = Batch::new(&[&plain], &[], &[], 0, LossOptions::default(), &dev).expect("batch");
        assert!(alone.positions.is_none(), "a batch without packed rows keeps the plain causal pass");
    }

    /// A question offering fewer answers than the set (a 2-option question among 3 labels) has
    /// the others masked: row 1 is -log_softmax([2, 2])[0] = ln 2, and its mask is pinned.
    #[test]
    fn answers_a_question_does_not_offer_are_masked() {
        let dev = Device::Cpu;
        let mut short = ex(&[9], 0, &[]);
        short.offered = 2;
        let examples = [ex(&[9], 1, &[]), short];
        let refs: Vec<&Example> = examples.iter().collect();
        let logits = Tensor::new(&[[5.0f32, 1.0, 0.0, -1.0, 2.0], [0.0, 2.0, 2.0, 2.0, 0.0]], &dev).expect("logits");
        let b = Batch::new(&refs, &[1, 2, 3], &[1.0; 3], 0, LossOptions { choice: true, conclusion_weight: 0.0 }, &dev).expect("batch");
        assert_eq!(b.offered.as_ref().expect("mask").to_vec2::<f32>().expect("mask"), [[0.0, 0.0, 0.0], [0.0, 0.0, -1e9]]);
        let loss = f64::from(b.loss(&logits).expect("loss").to_scalar::<f32>().expect("scalar"));
        assert!((loss - (1.407_605_964_4 + 2f64.ln()) / 2.0).abs() < 1e-5, "{loss}");
        let full = Batch::new(&refs[..1], &[1, 2, 3], &[1.0; 3], 0, LossOptions::default(), &dev).expect("batch");
        assert!(full.offered.is_none());
    }
}
