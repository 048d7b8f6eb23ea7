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
use crate::model::{Cancel, Finish, GenerateOptions, Generation, TokenLogprob};

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
    let opts = options(&job, &cancel);
    let n = job.n;
    let state = s.clone();
    let gens = super::api::on_engine(&s, deadline, move || {
        let mut out: Vec<Generation> = Vec::with_capacity(n);
        for i in 0..n {
            let o = GenerateOptions { seed: opts.seed.wrapping_add(i as u64), ..opts.clone() };
            let g = engine.generate(&prompt, &o, |_, _| {}).map_err(|e| e.to_string())?;
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
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let (id, created) = ids(meta.shape);
    let chunks = Chunks { id, created, model: meta.model, shape: meta.shape, include_usage: job.include_usage };
    let deadline = meta.admitted + s.opts.timeout;
    tokio::spawn(async move {
        let _place = place;
        let waited = tokio::select! {
            permit = tokio::time::timeout_at(deadline.into(), s.engine.clone().acquire_owned()) => permit,
            () = tx.closed() => {
                s.metrics.abandoned("client_gone");
                return;
            }
        };
        let permit = match waited {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return, // the server is stopping
            Err(_) => {
                s.metrics.abandoned("timeout");
                let _ = tx.send(error_event(&timeout_error(&s))).await;
                let _ = tx.send(Event::default().data("[DONE]")).await;
                return;
            }
        };
        let (s2, tx2, chunks2, cancel2) = (s.clone(), tx.clone(), chunks.clone(), cancel.clone());
        let opts = options(&job, &cancel);
        let worker = tokio::task::spawn_blocking(move || -> Result<(usize, usize, Finish), String> {
            let _running = s2.running();
            let (mut prompt_tokens, mut completion) = (0, 0);
            for i in 0..job.n {
                let send = |e: Event| {
                    if tx2.blocking_send(e).is_err() {
                        cancel2.cancel();
                    }
                };
                if let Some(e) = chunks2.start(i) {
                    send(e);
                }
                let o = GenerateOptions { seed: opts.seed.wrapping_add(i as u64), ..opts.clone() };
                let t0 = Instant::now();
                let mut first = true;
                let mut offset = 0;
                let g = engine
                    .generate(&prompt, &o, |piece, lps| {
                        if std::mem::take(&mut first) {
                            s2.metrics.first_token(t0.elapsed().as_secs_f64());
                        }
                        send(chunks2.piece(i, piece, job.top_logprobs.map(|_| lps), offset));
                        offset += piece.len();
                    })
                    .map_err(|e| e.to_string())?;
                s2.metrics.generation(&g);
                (prompt_tokens, completion) = (g.prompt_tokens, completion + g.generated_tokens);
                if matches!(g.finish, Finish::Cancelled | Finish::TimedOut) {
                    return Ok((prompt_tokens, completion, g.finish));
                }
                send(chunks2.finish(i, g.finish));
            }
            drop(permit);
            Ok((prompt_tokens, completion, Finish::Stop))
        });
        let last = match worker.await {
            Ok(Ok((_, _, Finish::Cancelled))) => {
                s.metrics.abandoned("client_gone");
                return;
            }
            Ok(Ok((_, _, Finish::TimedOut))) => {
                s.metrics.abandoned("timeout");
                Some(error_event(&timeout_error(&s)))
            }
            Ok(Ok((p, c, _))) => chunks.include_usage.then(|| chunks.event(json!([]), Some(usage(p, c)))),
            Ok(Err(e)) => Some(error_event(&ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))),
            Err(e) => Some(error_event(&ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))),
        };
        if let Some(e) = last {
            let _ = tx.send(e).await;
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(rx);
    Sse::new(tokio_stream::StreamExt::map(events, Ok::<Event, Infallible>)).into_response()
}
