//! Running a checked [`Job`] on the engine and answering it in OpenAI's chat or text shape,
//! whole or as server-sent events: `n` choices, stop strings, log-probabilities, and
//! cancellation: a client that goes away or a request past its deadline (counted from
//! admission, so the wait in the queue is inside it) stops generating at the next token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use super::openai::Job;
use super::{ApiError, AppState};
use crate::engine::Engine;
use crate::model::{Cancel, Finish, GenerateOptions, Generation, Lora, TokenLogprob};

/// Which endpoint's shape the answer takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Text,
}

/// What the answer says besides the generations.
pub struct Meta {
    pub shape: Shape,
    pub model: String,
    /// What the plugins found in the request (`medtune` in the answer).
    pub found: Value,
    /// When the request was admitted: its deadline runs from here.
    pub admitted: Instant,
    /// The adapter of the model it names, kept apart from the weights.
    pub lora: Option<Arc<Lora>>,
}

/// Cancels the generation when dropped armed: axum drops a handler's future when its client
/// goes away.
struct CancelOnDrop {
    cancel: Cancel,
    state: Arc<AppState>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.cancel.cancel();
            self.state.metrics.abandoned("client_gone");
        }
    }
}

fn timeout_error(s: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!("the request took longer than its limit of {} ms", s.opts.timeout.as_millis()),
    )
}

fn options(job: &Job, cancel: &Cancel) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: job.max_tokens,
        temperature: job.temperature,
        top_p: job.top_p,
        seed: job.seed,
        stop: job.stop.clone(),
        top_logprobs: job.top_logprobs,
        cancel: cancel.clone(),
    }
}

fn ids(shape: Shape) -> (String, u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let prefix = if shape == Shape::Chat { "chatcmpl" } else { "cmpl" };
    (format!("{prefix}-{:x}", now.as_nanos()), now.as_secs())
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length | Finish::Cancelled | Finish::TimedOut => "length",
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Log-probabilities in the chat shape (`{"content": [...]}`).
fn chat_logprobs(lps: &[TokenLogprob]) -> Value {
    let one = |t: &str, lp: f32| json!({"token": t, "logprob": lp, "bytes": t.as_bytes()});
    let content: Vec<Value> = lps
        .iter()
        .map(|l| {
            let mut v = one(&l.token, l.logprob);
            v["top_logprobs"] = l.top.iter().map(|(t, lp)| one(t, *lp)).collect();
            v
        })
        .collect();
    json!({ "content": content })
}

/// Log-probabilities in the legacy text shape; `offset` is where the first token's text
/// starts in the completion.
fn text_logprobs(lps: &[TokenLogprob], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(lps.len());
    for l in lps {
        text_offset.push(offset);
        offset += l.token.len();
    }
    json!({
        "tokens": lps.iter().map(|l| l.token.as_str()).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|l| l.top.iter().map(|(t, lp)| (t.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

/// Where each piece of each choice's text goes (streaming), called on the thread that
/// generates: it must not block.
type Sink = Arc<dyn Fn(usize, &str, &[TokenLogprob]) + Send + Sync>;

/// Generates the job's `n` choices by `deadline`: in the running batch when the engine
/// batches (all `n` at once, beside the other requests), else one after another under the
/// engine permit. Generations end early when `cancel` says so.
#[allow(clippy::too_many_arguments)]
async fn generate_all(
    s: &Arc<AppState>,
    engine: Arc<Engine>,
    job: &Job,
    prompt: String,
    cancel: &Cancel,
    deadline: Instant,
    sink: Option<Sink>,
    lora: Option<Arc<Lora>>,
) -> Result<Vec<Generation>, ApiError> {
    let opts = options(job, cancel);
    let greedy = opts.temperature == 0.0;
    let choice = move |i: usize| GenerateOptions { seed: opts.seed.wrapping_add(i as u64), ..opts.clone() };
    let Some(batcher) = s.batcher() else {
        if lora.is_some() {
            // the server starts the batcher whenever adapters are kept apart
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an unmerged adapter needs the batching engine"));
        }
        let (n, state) = (job.n, s.clone());
        return super::api::on_engine(s, deadline, move || {
            let mut out: Vec<Generation> = Vec::with_capacity(n);
            for i in 0..n {
                let g = engine
                    .generate(&prompt, &choice(i), |t, l| {
                        if let Some(sink) = &sink {
                            sink(i, t, l);
                        }
                    })
                    .map_err(|e| e.to_string())?;
                state.metrics.generation(&g);
                let over = matches!(g.finish, Finish::Cancelled | Finish::TimedOut);
                out.push(g);
                if over {
                    break;
                }
            }
            Ok(out)
        })
        .await;
    };
    // greedy choices are one generation given n times: sequences that join the batch at
    // different steps have other rows beside them, and bf16 products can then tip a near-tie
    // one way in one copy and the other way in another (greedy decoding has one answer)
    let (runs, copies) = if greedy { (1, job.n) } else { (job.n, 1) };
    let mut waiting = Vec::with_capacity(runs);
    for i in 0..runs {
        let (done, rx) = tokio::sync::oneshot::channel();
        let sink = sink.clone();
        let on_text: super::batch::OnText = Box::new(move |t: &str, l: &[TokenLogprob]| {
            if let Some(sink) = &sink {
                (i..i + copies).for_each(|c| sink(c, t, l));
            }
        });
        batcher
            .submit(super::batch::Request { prompt: prompt.clone(), opts: choice(i), lora: lora.clone(), on_text, done })
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e))?;
        waiting.push(rx);
    }
    let all = async {
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            match rx.await {
                Ok(Ok(g)) => out.extend(std::iter::repeat_n(g, copies)),
                Ok(Err(e)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e)),
                Err(_) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the batching thread has stopped")),
            }
        }
        Ok(out)
    };
    match tokio::time::timeout_at(deadline.into(), all).await {
        Ok(r) => r,
        // the sequences stop at their next step: their deadline is the same
        Err(_) => {
            s.metrics.abandoned("timeout");
            Err(timeout_error(s))
        }
    }
}

/// Answers `job` after `prompt` (the chat template already applied for chat).
pub async fn respond(
    s: Arc<AppState>,
    engine: Arc<Engine>,
    job: Job,
    prompt: String,
    meta: Meta,
    place: OwnedSemaphorePermit,
) -> Result<Response, ApiError> {
    let deadline = meta.admitted + s.opts.timeout;
    let cancel = Cancel::with_deadline(deadline);
    if job.stream {
        return Ok(stream(s, engine, job, prompt, meta, place, cancel));
    }
    let mut guard = CancelOnDrop { cancel: cancel.clone(), state: s.clone(), armed: true };
    let gens = generate_all(&s, engine, &job, prompt, &cancel, deadline, None, meta.lora.clone()).await;
    guard.armed = false;
    let gens = gens?;
    if gens.iter().any(|g| g.finish == Finish::TimedOut) {
        s.metrics.abandoned("timeout");
        return Err(timeout_error(&s));
    }
    let prompt_tokens = gens.first().map_or(0, |g| g.prompt_tokens);
    let completion: usize = gens.iter().map(|g| g.generated_tokens).sum();
    let (id, created) = ids(meta.shape);
    let choices: Vec<Value> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let logprobs = match (job.top_logprobs, meta.shape) {
                (None, _) => Value::Null,
                (Some(_), Shape::Chat) => chat_logprobs(&g.logprobs),
                (Some(_), Shape::Text) => text_logprobs(&g.logprobs, 0),
            };
            match meta.shape {
                Shape::Chat => json!({"index": i, "message": {"role": "assistant", "content": g.text}, "logprobs": logprobs, "finish_reason": finish_reason(g.finish)}),
                Shape::Text => json!({"index": i, "text": g.text, "logprobs": logprobs, "finish_reason": finish_reason(g.finish)}),
            }
        })
        .collect();
    let object = if meta.shape == Shape::Chat { "chat.completion" } else { "text_completion" };
    Ok(Json(json!({
        "id": id, "object": object, "created": created, "model": meta.model,
        "choices": choices, "usage": usage(prompt_tokens, completion), "medtune": meta.found,
    }))
    .into_response())
}

/// The chunks of one stream.
#[derive(Clone)]
struct Chunks {
    id: String,
    created: u64,
    model: String,
    shape: Shape,
    include_usage: bool,
}

impl Chunks {
    fn event(&self, choices: Value, usage: Option<Value>) -> Event {
        let object = if self.shape == Shape::Chat { "chat.completion.chunk" } else { "text_completion" };
        let mut c = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices});
        if self.include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        Event::default().data(c.to_string())
    }

    /// A piece of choice `i`'s text; `offset`: where it starts in the completion.
    fn piece(&self, i: usize, text: &str, lps: Option<&[TokenLogprob]>, offset: usize) -> Event {
        let choice = match self.shape {
            Shape::Chat => json!({"index": i, "delta": {"content": text}, "logprobs": lps.map(chat_logprobs), "finish_reason": null}),
            Shape::Text => json!({"index": i, "text": text, "logprobs": lps.map(|l| text_logprobs(l, offset)), "finish_reason": null}),
        };
        self.event(json!([choice]), None)
    }

    fn start(&self, i: usize) -> Option<Event> {
        (self.shape == Shape::Chat).then(|| {
            self.event(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]), None)
        })
    }

    fn finish(&self, i: usize, f: Finish) -> Event {
        let choice = match self.shape {
            Shape::Chat => json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": finish_reason(f)}),
            Shape::Text => json!({"index": i, "text": "", "logprobs": null, "finish_reason": finish_reason(f)}),
        };
        self.event(json!([choice]), None)
    }
}

fn error_event(e: &ApiError) -> Event {
    Event::default().data(json!({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.status.as_u16()}}).to_string())
}

/// Server-sent events: per choice (chat: a first chunk with the role), a chunk per piece of
/// text, a last chunk with the finish reason; with `include_usage` a chunk with `usage` and no
/// choices; then `data: [DONE]`. A client that goes away stops the generation at its next
/// token; a deadline passed is an error event.
fn stream(
    s: Arc<AppState>,
    engine: Arc<Engine>,
    job: Job,
    prompt: String,
    meta: Meta,
    place: OwnedSemaphorePermit,
    cancel: Cancel,
) -> Response {
    // unbounded: the generating thread never waits on a slow reader (a choice's text is
    // bounded by max_tokens)
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let (id, created) = ids(meta.shape);
    let lora = meta.lora;
    let chunks = Chunks { id, created, model: meta.model, shape: meta.shape, include_usage: job.include_usage };
    let deadline = meta.admitted + s.opts.timeout;
    tokio::spawn(async move {
        let _place = place;
        for i in 0..job.n {
            if let Some(e) = chunks.start(i) {
                let _ = tx.send(e);
            }
        }
        let offsets = Arc::new(std::sync::Mutex::new(vec![0usize; job.n]));
        let (tx2, chunks2, cancel2, metrics, t0) = (tx.clone(), chunks.clone(), cancel.clone(), s.metrics.clone(), Instant::now());
        let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let with_logprobs = job.top_logprobs.is_some();
        let sink: Sink = Arc::new(move |i, text, lps| {
            if first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                metrics.first_token(t0.elapsed().as_secs_f64());
            }
            let offset = offsets
                .lock()
                .map(|mut o| {
                    let at = o[i];
                    o[i] += text.len();
                    at
                })
                .unwrap_or(0);
            if tx2.send(chunks2.piece(i, text, with_logprobs.then_some(lps), offset)).is_err() {
                cancel2.cancel();
            }
        });
        let gens = tokio::select! {
            g = generate_all(&s, engine, &job, prompt, &cancel, deadline, Some(sink), lora) => g,
            () = tx.closed() => {
                cancel.cancel();
                s.metrics.abandoned("client_gone");
                return;
            }
        };
        let gens = match gens {
            Ok(g) if g.iter().any(|g| g.finish == Finish::Cancelled) => {
                s.metrics.abandoned("client_gone");
                return;
            }
            Ok(g) if g.iter().any(|g| g.finish == Finish::TimedOut) => {
                s.metrics.abandoned("timeout");
                Err(timeout_error(&s))
            }
            other => other,
        };
        match gens {
            Ok(gens) => {
                for (i, g) in gens.iter().enumerate() {
                    let _ = tx.send(chunks.finish(i, g.finish));
                }
                if chunks.include_usage {
                    let prompt_tokens = gens.first().map_or(0, |g| g.prompt_tokens);
                    let _ = tx.send(chunks.event(json!([]), Some(usage(prompt_tokens, gens.iter().map(|g| g.generated_tokens).sum()))));
                }
            }
            Err(e) => {
                let _ = tx.send(error_event(&e));
            }
        }
        let _ = tx.send(Event::default().data("[DONE]"));
    });
    let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    Sse::new(tokio_stream::StreamExt::map(events, Ok::<Event, Infallible>)).into_response()
}
