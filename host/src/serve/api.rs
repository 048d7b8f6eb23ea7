//! The endpoint handlers: request checks, admission (a bounded queue), the plugin chain over
//! incoming questions, model calls on blocking threads, OpenAI-shaped responses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, Uri, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::data::Record;
use crate::engine::Engine;
use crate::model::{ChatMessage, GenerateOptions};
use crate::prompt::{Choices, Question, expanded, prompt_ids};

use super::{ApiError, AppState};

type S = State<Arc<AppState>>;

/// Runs `f` and counts the request in the metrics under `endpoint`.
async fn counted(s: &AppState, endpoint: &str, f: impl std::future::Future<Output = Result<Response, ApiError>>) -> Response {
    let t0 = Instant::now();
    let response = f.await.unwrap_or_else(IntoResponse::into_response);
    s.metrics.request(endpoint, response.status().as_u16(), t0.elapsed().as_secs_f64());
    response
}

pub async fn health(State(s): S) -> Response {
    let (status, body) = match s.model.get() {
        None => (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "loading"})),
        Some(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "failed", "error": e})),
        Some(Ok(_)) => (StatusCode::OK, json!({"status": "ok", "model": s.opts.model_name})),
    };
    (status, Json(body)).into_response()
}

pub async fn models(State(s): S) -> Response {
    counted(&s, "models", async {
        Ok(Json(json!({"object": "list", "data": [{"id": s.opts.model_name, "object": "model", "owned_by": "medtune"}]})).into_response())
    })
    .await
}

pub async fn metrics(State(s): S) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no endpoint {uri} (see /v1/models, /v1/chat/completions, /v1/answer, /health, /metrics)"),
    )
}

/// A place in the queue, or 429.
fn admit(s: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    s.admitted.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit",
            format!("the queue is full ({} requests admitted); retry later", s.opts.queue),
        )
    })
}

fn model(s: &AppState) -> Result<Arc<Engine>, ApiError> {
    match s.model.get() {
        Some(Ok(m)) => Ok(m.clone()),
        Some(Err(e)) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "model_failed", format!("the model failed to load: {e}"))),
        None => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loading", "the model is still loading; retry when /health says ok")),
    }
}

/// Runs blocking model work under the engine permit and the request's time limit.
async fn on_engine<T: Send + 'static>(s: &AppState, f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, ApiError> {
    let engine = s.engine.clone();
    // the time limit covers the wait for the engine too
    let job = async move {
        let permit = engine
            .acquire_owned()
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping"))?;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the model call failed: {e}")))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
    };
    match tokio::time::timeout(s.opts.timeout, job).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("the request took longer than its limit of {} ms", s.opts.timeout.as_millis()),
        )),
        Ok(r) => r,
    }
}

/// The question (and context) through the plugin chain (swapped plugins take over here).
async fn annotate(s: &Arc<AppState>, question: &str, context: &str) -> Result<Record, ApiError> {
    let s2 = s.clone();
    let mut record = Record::new("request".into(), question.to_owned(), context.to_owned(), None, Vec::new(), "http".into());
    record.split = crate::data::Split::Test;
    tokio::task::spawn_blocking(move || {
        let mut set = s2.chain.lock().map_err(|_| "the plugin chain is poisoned".to_owned())?;
        let report = crate::data::annotate(&mut set, std::slice::from_mut(&mut record), 1, false, |_, _| {});
        for line in &report.swaps {
            eprintln!("{line}");
        }
        for (id, t) in &report.plugin_time {
            s2.metrics.plugin(id, t.as_secs_f64());
        }
        Ok::<_, String>(record)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
}

/// What the plugins found, for responses.
fn findings(r: &Record) -> Value {
    let chars: Vec<char> = r.text.chars().collect();
    let text = |a: u32, b: u32| chars.get(a as usize..b as usize).map(|c| c.iter().collect::<String>()).unwrap_or_default();
    json!({
        "concepts": r.mentions.iter().map(|m| json!({"text": text(m.span.start, m.span.end), "id": m.concept.id, "name": m.concept.preferred_name, "score": m.score, "source": m.source})).collect::<Vec<_>>(),
        "expansions": r.expansions.iter().map(|e| json!({"abbreviation": e.abbreviation, "long_form": e.long_form, "confidence": e.confidence, "source": e.source})).collect::<Vec<_>>(),
        "plugins": r.provenance.plugins,
        "plugin_failures": r.failures.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    question: String,
    #[serde(default)]
    context: Option<String>,
    /// A multiple-choice question's options, in letter order.
    #[serde(default)]
    options: Option<Vec<String>>,
    #[serde(default)]
    model: Option<String>,
}

/// The options of a request, checked against the task: a multiple-choice task needs 2 up to
/// its number of letters; another task takes none.
fn request_options(s: &AppState, options: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let task = &s.opts.task;
    if task.labels.is_empty() {
        return Err(ApiError::bad_request(
            "this model was fine-tuned to write answers (a generate task), not to pick a label: ask it at /v1/chat/completions",
        ));
    }
    match (task.multiple_choice, options) {
        (true, Some(o)) if (2..=task.labels.len()).contains(&o.len()) && o.iter().all(|o| !o.trim().is_empty()) => Ok(o),
        (true, Some(o)) => Err(ApiError::bad_request(format!(
            "options: {} given, some empty or too many; this model answers questions with 2 to {} non-empty options",
            o.len(),
            task.labels.len()
        ))),
        (true, None) => Err(ApiError::bad_request(format!(
            "options: this model answers multiple-choice questions; pass their options (2 to {}) as a list",
            task.labels.len()
        ))),
        (false, Some(_)) => Err(ApiError::bad_request(format!(
            "options: this model answers with its labels ({}), not with a question's options",
            task.labels.join(", ")
        ))),
        (false, None) => Ok(Vec::new()),
    }
}

pub async fn answer(State(s): S, body: Result<Json<AnswerRequest>, JsonRejection>) -> Response {
    let s2 = s.clone();
    counted(&s, "answer", async move {
        let Json(req) = body?;
        if req.question.trim().is_empty() {
            return Err(ApiError::bad_request("question is empty"));
        }
        check_model(&s2, req.model.as_deref())?;
        let options = request_options(&s2, req.options)?;
        let _place = admit(&s2)?;
        let m = model(&s2)?;
        // one paragraph: the record's text is question, blank line, context
        let record = annotate(&s2, &req.question.replace("\n\n", " "), req.context.as_deref().unwrap_or("")).await?;
        let opts = s2.opts.prompts;
        let (q, c) = if opts.expand { expanded(&record) } else { (record.question.clone(), record.context.clone()) };
        let (m2, labels, asked) = (m.clone(), s2.opts.task.labels.clone(), options.clone());
        let (probs, n) = on_engine(&s2, move || {
            let choices = Choices::new(&labels, m2.tokenizer()).map_err(|e| e.to_string())?;
            let question = Question { question: &q, context: &c, options: &asked };
            let ids = prompt_ids(m2.tokenizer(), &question, &choices, opts.max_len, opts.keep_end).map_err(|e| e.to_string())?;
            let offered = if asked.is_empty() { choices.tokens.len() } else { asked.len() };
            Ok((m2.answer(&ids, &choices.tokens[..offered])?, ids.len()))
        })
        .await?;
        s2.metrics.tokens("prompt", n);
        let best = crate::train::eval::best(&probs);
        let labels = &s2.opts.task.labels[..probs.len()];
        let probabilities: serde_json::Map<String, Value> = labels.iter().zip(&probs).map(|(l, p)| (l.clone(), json!(p))).collect();
        let mut body = json!({
            "object": "answer",
            "model": s2.opts.model_name,
            "engine": m.name(),
            "answer": labels[best],
            "probabilities": probabilities,
            "usage": {"prompt_tokens": n, "completion_tokens": 0, "total_tokens": n},
        });
        if let (Some(b), Some(text)) = (body.as_object_mut(), options.get(best)) {
            b.insert("answer_text".into(), json!(text));
        }
        if let (Some(b), Value::Object(f)) = (body.as_object_mut(), findings(&record)) {
            b.extend(f);
        }
        Ok(Json(body).into_response())
    })
    .await
}

fn check_model(s: &AppState, asked: Option<&str>) -> Result<(), ApiError> {
    match asked {
        Some(m) if m != s.opts.model_name => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("unknown model {m:?}: this server serves {:?} (see /v1/models)", s.opts.model_name),
        )),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    role: String,
    content: String,
}

pub async fn chat(State(s): S, body: Result<Json<ChatRequest>, JsonRejection>) -> Response {
    let s2 = s.clone();
    counted(&s, "chat", async move {
        let Json(req) = body?;
        check_model(&s2, Some(&req.model))?;
        if req.messages.is_empty() {
            return Err(ApiError::bad_request("messages is empty"));
        }
        if let Some((i, _)) = req.messages.iter().enumerate().find(|(_, m)| m.content.trim().is_empty()) {
            return Err(ApiError::bad_request(format!("messages[{i}].content is empty")));
        }
        if let Some((i, m)) = req.messages.iter().enumerate().find(|(_, m)| !["system", "user", "assistant"].contains(&m.role.as_str())) {
            return Err(ApiError::bad_request(format!("messages[{i}].role {:?} is not system, user or assistant", m.role)));
        }
        let max_tokens = req.max_tokens.unwrap_or(s2.opts.max_tokens);
        if max_tokens == 0 || max_tokens > s2.opts.max_tokens {
            return Err(ApiError::bad_request(format!("max_tokens {max_tokens} is outside 1..={}", s2.opts.max_tokens)));
        }
        if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) || req.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(ApiError::bad_request("temperature must be in [0, 2] and top_p in (0, 1]"));
        }
        let place = admit(&s2)?;
        let m = model(&s2)?;
        // the last user message goes through the plugin chain; its expansions are written in,
        // as in training
        let mut messages: Vec<ChatMessage> = req.messages.iter().map(|x| ChatMessage { role: x.role.clone(), content: x.content.clone() }).collect();
        let mut found = json!({});
        if let Some(last) = messages.iter_mut().rev().find(|x| x.role == "user") {
            let record = annotate(&s2, &last.content, "").await?;
            if s2.opts.prompts.expand {
                last.content = expanded(&record).0;
            }
            found = findings(&record);
        }
        let prompt = m.tokenizer().chat_prompt(&messages).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let n = m.tokenizer().encode(&prompt).map_err(|e| ApiError::bad_request(e.to_string()))?.len();
        if n >= m.max_positions() {
            return Err(ApiError::bad_request(format!("the prompt is {n} tokens, over the model's context of {}", m.max_positions())));
        }
        let opts = GenerateOptions { max_new_tokens: max_tokens, temperature: req.temperature.unwrap_or(0.0), top_p: req.top_p, seed: req.seed.unwrap_or(0) };
        let id = format!("chatcmpl-{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let name = s2.opts.model_name.clone();
        if req.stream {
            return Ok(stream(s2.clone(), m, prompt, opts, id, created, name, place).await);
        }
        let m2 = m.clone();
        let g = on_engine(&s2, move || m2.generate(&prompt, &opts, |_| {}).map_err(|e| e.to_string())).await?;
        s2.metrics.tokens("prompt", g.prompt_tokens);
        s2.metrics.tokens("completion", g.generated_tokens);
        Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text}, "finish_reason": if g.stopped { "stop" } else { "length" }}],
            "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.generated_tokens, "total_tokens": g.prompt_tokens + g.generated_tokens},
            "medtune": found,
        }))
        .into_response())
    })
    .await
}

/// Server-sent events: one `chat.completion.chunk` per piece of text, a last chunk with the
/// finish reason and `usage`, then `data: [DONE]`.
#[allow(clippy::too_many_arguments)]
async fn stream(
    s: Arc<AppState>,
    m: Arc<Engine>,
    prompt: String,
    opts: GenerateOptions,
    id: String,
    created: u64,
    name: String,
    place: OwnedSemaphorePermit,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(256);
    let chunk = move |delta: Value, finish: Value, usage: Option<Value>| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Event::default().data(c.to_string())
    };
    tokio::spawn(async move {
        let _place = place;
        let Ok(engine) = s.engine.clone().acquire_owned().await else { return };
        let tx2 = tx.clone();
        let chunk2 = chunk.clone();
        let s2 = s.clone();
        // after a timeout the generation may run on; it stops sending
        let late = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let late2 = late.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _ = tx2.blocking_send(chunk2(json!({"role": "assistant", "content": ""}), Value::Null, None));
            let g = m.generate(&prompt, &opts, |piece| {
                if !late2.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = tx2.blocking_send(chunk2(json!({"content": piece}), Value::Null, None));
                }
            });
            drop(engine);
            g
        });
        let last = match tokio::time::timeout(s.opts.timeout, job).await {
            Ok(Ok(Ok(g))) => {
                s2.metrics.tokens("prompt", g.prompt_tokens);
                s2.metrics.tokens("completion", g.generated_tokens);
                let usage = json!({"prompt_tokens": g.prompt_tokens, "completion_tokens": g.generated_tokens, "total_tokens": g.prompt_tokens + g.generated_tokens});
                chunk(json!({}), json!(if g.stopped { "stop" } else { "length" }), Some(usage))
            }
            Ok(Ok(Err(e))) => Event::default().data(json!({"error": {"message": e.to_string(), "type": "internal"}}).to_string()),
            Ok(Err(e)) => Event::default().data(json!({"error": {"message": e.to_string(), "type": "internal"}}).to_string()),
            Err(_) => {
                late.store(true, std::sync::atomic::Ordering::Relaxed);
                Event::default().data(json!({"error": {"message": format!("the request took longer than its limit of {} ms", s.opts.timeout.as_millis()), "type": "timeout"}}).to_string())
            }
        };
        let _ = tx.send(last).await;
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(rx);
    let events = tokio_stream::StreamExt::map(events, Ok::<Event, Infallible>);
    Sse::new(events).into_response()
}
