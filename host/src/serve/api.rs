//! The endpoint handlers: request checks, admission (a bounded queue), the plugin chain over
//! incoming questions, model calls on blocking threads, OpenAI-shaped responses.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use super::complete::{Meta, Shape, respond};
use super::openai::{ChatRequest, CompletionRequest, Input, Job};
use crate::data::Record;
use crate::engine::Engine;
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
        let data: Vec<Value> = s.models.ids().into_iter().map(|id| json!({"id": id, "object": "model", "owned_by": "medtune"})).collect();
        Ok(Json(json!({"object": "list", "data": data})).into_response())
    })
    .await
}

pub async fn metrics(State(s): S) -> Response {
    let in_flight = s.opts.queue.max(1) - s.admitted.available_permits();
    let running = s.running_now();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(in_flight.saturating_sub(running), running)).into_response()
}

pub async fn not_found(State(s): S, uri: Uri) -> Response {
    counted(&s, "none", async move {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {uri} (see /v1/models, /v1/chat/completions, /v1/completions, /v1/answer, /health, /metrics)"),
        ))
    })
    .await
}

pub async fn method_not_allowed(State(s): S, method: Method, uri: Uri) -> Response {
    let allowed = if ["/health", "/v1/models", "/metrics"].contains(&uri.path()) { "GET" } else { "POST" };
    counted(&s, "none", async move {
        Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} {uri}: this endpoint takes {allowed}")))
    })
    .await
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

/// Runs blocking model work under the engine permit, by `deadline` (the wait for the engine
/// is inside it).
pub(super) async fn on_engine<T: Send + 'static>(
    s: &Arc<AppState>,
    deadline: Instant,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = s.engine.clone();
    let state = s.clone();
    let job = async move {
        let permit = engine
            .acquire_owned()
            .await
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping"))?;
        tokio::task::spawn_blocking(move || {
            let running = state.running();
            let out = f();
            drop((running, permit));
            out
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the model call failed: {e}")))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
    };
    match tokio::time::timeout_at(deadline.into(), job).await {
        Err(_) => {
            s.metrics.abandoned("timeout");
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("the request took longer than its limit of {} ms", s.opts.timeout.as_millis()),
            ))
        }
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
        let name = req.model.unwrap_or_else(|| s2.models.main().to_owned());
        let lora = s2.models.pick(&name)?;
        let options = request_options(&s2, req.options)?;
        let admitted = Instant::now();
        let _place = admit(&s2)?;
        let m = model(&s2)?;
        // one paragraph: the record's text is question, blank line, context
        let record = annotate(&s2, &req.question.replace("\n\n", " "), req.context.as_deref().unwrap_or("")).await?;
        let opts = s2.opts.prompts;
        let (q, c) = if opts.expand { expanded(&record) } else { (record.question.clone(), record.context.clone()) };
        let (m2, labels, asked) = (m.clone(), s2.opts.task.labels.clone(), options.clone());
        let (probs, n) = on_engine(&s2, admitted + s2.opts.timeout, move || {
            let choices = Choices::new(&labels, m2.tokenizer()).map_err(|e| e.to_string())?;
            let question = Question { question: &q, context: &c, options: &asked };
            let ids = prompt_ids(m2.tokenizer(), &question, &choices, opts.max_len, opts.keep_end).map_err(|e| e.to_string())?;
            let offered = if asked.is_empty() { choices.tokens.len() } else { asked.len() };
            Ok((m2.answer(&ids, &choices.tokens[..offered], lora.as_deref())?, ids.len()))
        })
        .await?;
        s2.metrics.tokens("prompt", n);
        let best = crate::train::eval::best(&probs);
        let labels = &s2.opts.task.labels[..probs.len()];
        let probabilities: serde_json::Map<String, Value> = labels.iter().zip(&probs).map(|(l, p)| (l.clone(), json!(p))).collect();
        let mut body = json!({
            "object": "answer",
            "model": name,
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

/// The plugin chain over the last user message (its expansions written in, as in
/// training, when the run expands), then the prompt the engine continues.
async fn chat_prompt(s: &Arc<AppState>, m: &Engine, job: &mut Job) -> Result<(String, Value), ApiError> {
    let mut found = json!({});
    let prompt = match &mut job.input {
        Input::Chat(messages) => {
            if let Some(last) = messages.iter_mut().rev().find(|x| x.role == "user") {
                let record = annotate(s, &last.content, "").await?;
                if s.opts.prompts.expand {
                    last.content = expanded(&record).0;
                }
                found = findings(&record);
            }
            m.tokenizer().chat_prompt(messages).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        Input::Text(p) => {
            found = findings(&annotate(s, p, "").await?);
            p.clone()
        }
    };
    let n = m.tokenizer().encode(&prompt).map_err(|e| ApiError::bad_request(e.to_string()))?.len();
    if n >= m.max_positions() {
        return Err(ApiError::bad_request(format!("the prompt is {n} tokens, over the model's context of {}", m.max_positions())));
    }
    Ok((prompt, found))
}

/// A checked job through admission, the plugin chain and the engine.
async fn complete(s: Arc<AppState>, mut job: Job, model_name: &str, shape: Shape) -> Result<Response, ApiError> {
    let lora = s.models.pick(model_name)?;
    let admitted = Instant::now();
    let place = admit(&s)?;
    let m = model(&s)?;
    let (prompt, found) = chat_prompt(&s, &m, &mut job).await?;
    let meta = Meta { shape, model: model_name.to_owned(), found, admitted, lora };
    respond(s, m, job, prompt, meta, place).await
}

pub async fn chat(State(s): S, body: Result<Json<Value>, JsonRejection>) -> Response {
    let s2 = s.clone();
    counted(&s, "chat", async move {
        let req = ChatRequest::parse(body?.0)?;
        let model = req.common.model.clone();
        let job = req.job(s2.opts.max_tokens)?;
        complete(s2, job, &model, Shape::Chat).await
    })
    .await
}

pub async fn completions(State(s): S, body: Result<Json<Value>, JsonRejection>) -> Response {
    let s2 = s.clone();
    counted(&s, "completions", async move {
        let req = CompletionRequest::parse(body?.0)?;
        let model = req.common.model.clone();
        let job = req.job(s2.opts.max_tokens)?;
        complete(s2, job, &model, Shape::Text).await
    })
    .await
}
