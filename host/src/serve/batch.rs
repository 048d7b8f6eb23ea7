//! Continuous batching on the candle engine: one thread runs model steps over every active
//! sequence at once ([`Llama::forward_segments`]). A request joins at the next step and
//! leaves when it is done; its prompt is read in chunks (at most [`PREFILL_BUDGET`] prompt
//! tokens per step over all sequences), so a long prompt cannot stall the others; each
//! sequence keeps its own KV cache slots ([`SeqCache`]). Sequences of different adapters
//! share a step: each one's rows get its own adapter's update ([`Segment::lora`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};

use candle_core::Tensor;

use crate::engine::Engine;
use crate::model::{Decoder, GenerateOptions, Generation, LoadedModel, Lora, Segment, SeqCache, TokenLogprob};

/// Prompt tokens read per step, over all sequences.
pub const PREFILL_BUDGET: usize = 256;

/// What a piece of text goes to (called on the batching thread: it must not block).
pub type OnText = Box<dyn FnMut(&str, &[TokenLogprob]) + Send>;

/// One generation asked of the batcher.
pub struct Request {
    /// The prompt (chat template applied).
    pub prompt: String,
    /// How to decode; its cancel token stops it at the next step.
    pub opts: GenerateOptions,
    /// The adapter its rows go through, unmerged (none: the weights as loaded).
    pub lora: Option<Arc<Lora>>,
    /// Each new piece of text.
    pub on_text: OnText,
    /// The generation, or why it failed.
    pub done: tokio::sync::oneshot::Sender<Result<Generation, String>>,
}

/// The handle requests are sent through; the thread stops when the last handle is dropped.
pub struct Batcher {
    tx: Sender<Request>,
    active: Arc<AtomicUsize>,
}

impl Batcher {
    /// Starts the batching thread over a candle engine (`None` for another engine). Every
    /// finished generation is handed to `finished` (metrics), on that thread.
    pub fn start(engine: Arc<Engine>, max_batch: usize, finished: impl Fn(&Generation) + Send + 'static) -> Option<Self> {
        if !matches!(*engine, Engine::Candle(_)) {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let active = Arc::new(AtomicUsize::new(0));
        let counter = active.clone();
        std::thread::Builder::new()
            .name("medtune-batch".into())
            .spawn(move || {
                if let Engine::Candle(m) = &*engine {
                    run(m, &rx, max_batch.max(1), &counter, &finished);
                }
            })
            .ok()?;
        Some(Self { tx, active })
    }

    /// Queues a generation (it joins at the next step).
    pub fn submit(&self, request: Request) -> Result<(), String> {
        self.tx.send(request).map_err(|_| "the batching thread has stopped".to_owned())
    }

    /// Sequences in the running batch.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// A sequence in the batch.
struct Active<'m> {
    decoder: Decoder<'m>,
    cache: SeqCache,
    /// The prompt's tokens; `fed` of them are in the cache.
    prompt: Vec<u32>,
    fed: usize,
    lora: Option<Arc<Lora>>,
    /// The token sampled last, to feed next (after the prompt).
    next: Option<u32>,
    on_text: OnText,
    done: tokio::sync::oneshot::Sender<Result<Generation, String>>,
}

fn run(m: &LoadedModel, rx: &Receiver<Request>, max_batch: usize, counter: &AtomicUsize, finished: &dyn Fn(&Generation)) {
    let limit = m.llama.config().max_sequence();
    let mut batch: Vec<Active<'_>> = Vec::new();
    loop {
        // join: wait when idle, else take what has arrived
        while batch.len() < max_batch {
            let request = if batch.is_empty() {
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if batch.is_empty() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            let prompt = match m.tokenizer.encode(&request.prompt) {
                Ok(ids) if !ids.is_empty() => ids,
                Ok(_) => {
                    let _ = request.done.send(Err("the prompt has no tokens".into()));
                    continue;
                }
                Err(e) => {
                    let _ = request.done.send(Err(e.to_string()));
                    continue;
                }
            };
            let decoder = Decoder::new(&m.tokenizer, &request.opts, prompt.len(), limit);
            batch.push(Active {
                decoder,
                cache: SeqCache::new(&m.llama),
                prompt,
                fed: 0,
                lora: request.lora,
                next: None,
                on_text: request.on_text,
                done: request.done,
            });
        }
        // leave: the cancelled and the past their deadline
        let mut i = 0;
        while i < batch.len() {
            if batch[i].decoder.cancelled() {
                finish(batch.swap_remove(i), finished);
            } else {
                i += 1;
            }
        }
        counter.store(batch.len(), Ordering::Relaxed);
        if batch.is_empty() {
            continue;
        }
        // one step: every decoding sequence's last token, and prompt chunks within the budget
        let mut budget = PREFILL_BUDGET;
        let mut stepped: Vec<usize> = Vec::with_capacity(batch.len());
        let mut segments: Vec<Segment<'_>> = Vec::with_capacity(batch.len());
        for (j, a) in batch.iter_mut().enumerate() {
            let ids: &[u32] = match &a.next {
                Some(t) => std::slice::from_ref(t),
                None if budget > 0 => {
                    let n = (a.prompt.len() - a.fed).min(budget);
                    budget -= n;
                    &a.prompt[a.fed..a.fed + n]
                }
                None => continue,
            };
            stepped.push(j);
            segments.push(Segment { ids, cache: &mut a.cache, lora: a.lora.as_deref() });
        }
        let fed: Vec<usize> = segments.iter().map(|s| s.ids.len()).collect();
        let logits = m.llama.forward_segments(&mut segments);
        drop(segments);
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                // the step failed for all of its sequences
                for &j in stepped.iter().rev() {
                    // `stepped` is ascending: removing from the back keeps the others' places
                    let a = batch.swap_remove(j);
                    let _ = a.done.send(Err(format!("forward pass: {e}")));
                }
                continue;
            }
        };
        let mut over = Vec::new();
        for (k, (&j, n)) in stepped.iter().zip(fed).enumerate() {
            let a = &mut batch[j];
            if a.next.is_none() {
                a.fed += n;
                if a.fed < a.prompt.len() {
                    continue; // more of the prompt to read
                }
                a.decoder.prompt_done();
            }
            let row: Result<Tensor, _> = logits.get(k);
            let accepted = match row {
                Ok(row) => a.decoder.accept(&row, &mut a.on_text).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match accepted {
                Ok(Some(t)) => a.next = Some(t),
                Ok(None) => over.push((j, None)),
                Err(e) => over.push((j, Some(e))),
            }
        }
        over.sort_unstable_by_key(|(j, _)| *j);
        for (j, error) in over.into_iter().rev() {
            let a = batch.swap_remove(j);
            match error {
                None => finish(a, finished),
                Some(e) => {
                    let _ = a.done.send(Err(e));
                }
            }
        }
        counter.store(batch.len(), Ordering::Relaxed);
    }
}

/// Hands a sequence's generation back.
fn finish(mut a: Active<'_>, finished: &dyn Fn(&Generation)) {
    let g = a.decoder.into_generation(&mut a.on_text);
    finished(&g);
    let _ = a.done.send(Ok(g));
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use candle_core::{DType, Device};

    use super::{Batcher, Request};
    use crate::engine::Engine;
    use crate::model::GenerateOptions;

    /// Greedy answers of the batching thread to three prompts at once, the model loaded on
    /// this thread and prepared as `serve` prepares it (weights in the compute dtype, dense
    /// copies); a batch that does not answer within two minutes fails the test.
    fn answers(device: &Device, dtype: DType) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/families/llama3");
        let mut m = crate::model::load(&dir, device).expect("load");
        m.llama.set_compute_dtype(dtype);
        m.llama.store_dense_in_compute_dtype().expect("stored");
        m.llama.keep_dense_copies().expect("dense copies");
        let batcher = Batcher::start(Arc::new(Engine::Candle(m)), 4, |_| {}).expect("a candle engine batches");
        let pending: Vec<_> = ["The patient", "Aspirin is", "a b c d e f"]
            .iter()
            .map(|prompt| {
                let (done, rx) = tokio::sync::oneshot::channel();
                let opts = GenerateOptions { max_new_tokens: 8, ..Default::default() };
                let request = Request { prompt: (*prompt).into(), opts, lora: None, on_text: Box::new(|_, _| {}), done };
                batcher.submit(request).expect("submitted");
                rx
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let done: Vec<_> = pending.into_iter().map(|r| r.blocking_recv().map_err(|e| e.to_string()).and_then(|g| g)).collect();
            let _ = tx.send(done);
        });
        let done = rx.recv_timeout(Duration::from_secs(120)).expect("the batch answered within 120 s");
        done.into_iter().map(|g| g.expect("a generation").text).collect()
    }

    /// `serve`'s batching thread on CUDA answers what it answers on the CPU (f32), and runs in
    /// bf16: the model is loaded on one thread and stepped on another, as in `serve`.
    #[test]
    fn cuda_batches_answer_as_the_cpu() {
        let gpu = Device::new_cuda(0).expect("CUDA device 0");
        let want = answers(&Device::Cpu, DType::F32);
        assert_eq!(answers(&gpu, DType::F32), want);
        assert_eq!(answers(&gpu, DType::BF16).len(), 3);
    }
}
