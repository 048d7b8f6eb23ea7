//! `medtune serve`: an OpenAI-style HTTP API (axum + tokio) over the model, with the run's
//! plugin chain applied to every incoming question and hot-swapped while serving.
//!
//! Endpoints: `/health` (503 while the model loads, then 200), `/v1/models`,
//! `/v1/chat/completions` and `/v1/completions` (OpenAI's arguments and shapes, SSE streaming
//! with `data: [DONE]`), `/v1/answer` (the task's label, or a multiple-choice question's
//! letter, with probabilities and what the plugins found), `/metrics` (Prometheus). Every
//! error, 404 and 405 included, is OpenAI's JSON shape. Limits: request body size,
//! `max_tokens`, a per-request deadline from admission (the queue's wait inside it), a bounded
//! queue (429 when full); a client that goes away or a deadline passed stops the generation
//! at its next token; SIGTERM or Ctrl-C drains in-flight requests and stops.
//!
//! Invariant: handlers never block the runtime: model and plugin calls run on blocking
//! threads; generations run on the one batching thread (candle) or one at a time under the
//! engine permit (ONNX Runtime, `--max-batch 1`), `/v1/answer` calls one at a time.

mod adapters;
mod api;
mod batch;
mod complete;
mod error;
mod metrics;
mod openai;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::Semaphore;

use crate::engine::Engine;
use crate::plugin::PluginSet;
use crate::prompt::PromptOptions;

pub use adapters::{AdapterFolder, AdapterSpec, Models, load as load_adapter};
pub use error::ApiError;
pub use metrics::Metrics;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (port 0: any free port; the bound address is printed).
    pub addr: SocketAddr,
    /// The model's name in the API.
    pub model_name: String,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Largest `max_tokens` a request may ask for (and the default).
    pub max_tokens: usize,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Requests admitted at once (running or waiting); more get 429.
    pub queue: usize,
    /// Sequences decoded together in one step (continuous batching on candle).
    pub max_batch: usize,
    /// Whether adapters are kept apart from the weights (several models over one base): the
    /// generations then all run on the batching thread, whatever `max_batch`.
    pub unmerged: bool,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How prompts for `/v1/answer` are made (as in training).
    pub prompts: PromptOptions,
    /// The task's labels (the answers `/v1/answer` picks among).
    pub task: crate::artifacts::TaskLabels,
}

/// What the handlers share.
pub struct AppState {
    opts: ServeOptions,
    model: OnceLock<Result<Arc<Engine>, String>>,
    /// The models requests may name.
    models: Arc<Models>,
    chain: Mutex<PluginSet>,
    admitted: Arc<Semaphore>,
    engine: Arc<Semaphore>,
    /// Continuous batching over the model (candle), once it has loaded.
    batcher: OnceLock<Option<batch::Batcher>>,
    /// Model calls running now (besides the batch).
    running: AtomicUsize,
    metrics: Arc<Metrics>,
}

/// Counts a model call as running while it lives.
pub(crate) struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AppState {
    /// A state whose model is still loading.
    pub fn new(opts: ServeOptions, chain: PluginSet) -> Arc<Self> {
        Arc::new(Self {
            admitted: Arc::new(Semaphore::new(opts.queue.max(1))),
            engine: Arc::new(Semaphore::new(1)),
            batcher: OnceLock::new(),
            running: AtomicUsize::new(0),
            metrics: Arc::new(Metrics::new(opts.timeout)),
            models: Arc::new(Models::new(opts.model_name.clone())),
            opts,
            model: OnceLock::new(),
            chain: Mutex::new(chain),
        })
    }

    /// Marks a model call running until the guard drops.
    pub(crate) fn running(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::Relaxed);
        Running(&self.running)
    }

    /// Sequences in the batch and other model calls running now.
    fn running_now(&self) -> usize {
        self.running.load(Ordering::Relaxed) + self.batcher().map_or(0, batch::Batcher::active)
    }

    /// Hands over the loaded engine (or why it failed to load), and starts batching over it.
    pub fn set_model(&self, model: Result<Engine, String>) {
        let model = model.and_then(|mut engine| {
            if let Engine::Candle(m) = &mut engine {
                m.llama.store_dense_in_compute_dtype().map_err(|e| format!("the weights in the compute dtype: {e}"))?;
                if self.opts.max_batch > 1 {
                    m.llama.keep_dense_copies().map_err(|e| format!("dense copies of the weights for batching: {e}"))?;
                }
            }
            Ok(engine)
        });
        let model = model.map(Arc::new);
        if let Ok(m) = &model {
            let metrics = self.metrics.clone();
            let batcher = (self.opts.max_batch > 1 || self.opts.unmerged)
                .then(|| batch::Batcher::start(m.clone(), self.opts.max_batch, move |g| metrics.generation(g)))
                .flatten();
            let _ = self.batcher.set(batcher);
        }
        let _ = self.model.set(model);
    }

    /// The models requests may name (adapters are added before [`AppState::set_model`]).
    pub fn models(&self) -> &Arc<Models> {
        &self.models
    }

    /// The engine, once it has loaded.
    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.model.get().and_then(|m| m.as_ref().ok()).cloned()
    }

    /// The batcher, when the engine batches.
    fn batcher(&self) -> Option<&batch::Batcher> {
        self.batcher.get().and_then(Option::as_ref)
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.opts.max_body_bytes;
    Router::new()
        .route("/health", get(api::health))
        .route("/v1/models", get(api::models))
        .route("/v1/chat/completions", post(api::chat))
        .route("/v1/completions", post(api::completions))
        .route("/v1/answer", post(api::answer))
        .route("/metrics", get(api::metrics))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish. `on_bound` gets the
/// bound address (before the model has loaded). A client has `header_timeout` to send a
/// request's headers; a connection that stalls longer is closed.
pub async fn serve(state: Arc<AppState>, on_bound: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(state.opts.addr).await?;
    on_bound(listener.local_addr()?);
    let header_timeout = state.opts.header_timeout;
    let app = router(state);
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown());
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // a connection that failed before it was ours (reset, out of descriptors): go on
                Err(_) => continue,
            },
            () = &mut stop => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
