//! The OpenAI request bodies of `/v1/chat/completions` and `/v1/completions`, checked: what
//! medtune does, what OpenAI accepts and medtune may ignore, and what it refuses by name.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ApiError;
use crate::model::ChatMessage;

/// The most choices (`n`) a request may ask for.
pub const MAX_N: usize = 8;
/// The most stop strings, as OpenAI allows.
pub const MAX_STOP: usize = 4;
/// The most alternatives per token (`top_logprobs`), as OpenAI allows.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// A message's `content`: text, or a list of parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    role: String,
    content: Option<Content>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as OpenAI does; not used by the prompt
    name: Option<String>,
}

/// The fields both endpoints share (flattened into each).
#[derive(Debug, Deserialize)]
pub struct Common {
    pub model: String,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    n: Option<usize>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    logit_bias: Option<serde_json::Map<String, Value>>,
    // accepted and ignored, as OpenAI's own server treats them for this kind of model
    #[serde(default, rename = "user")]
    _user: Option<String>,
    #[serde(default, rename = "metadata")]
    _metadata: Option<Value>,
    #[serde(default, rename = "store")]
    _store: Option<bool>,
    #[serde(default, rename = "service_tier")]
    _service_tier: Option<String>,
}

/// The fields of [`Common`].
const COMMON: [&str; 16] = [
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "metadata",
    "store",
    "service_tier",
];

/// A request body: an unknown field is refused by name (as OpenAI does), then the fields are
/// read (serde cannot refuse unknown fields of a struct with a flattened part).
fn parse<T: DeserializeOwned>(body: Value, own: &[&str]) -> Result<T, ApiError> {
    let Value::Object(fields) = &body else { return Err(ApiError::bad_request("the body must be a JSON object")) };
    if let Some(name) = fields.keys().find(|k| !COMMON.contains(&k.as_str()) && !own.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field {name:?}: not an argument of this endpoint")).param(name));
    }
    serde_json::from_value(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(flatten)]
    pub common: Common,
    messages: Vec<Message>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<usize>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    // refused by name (see `refused`)
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    functions: Option<Value>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(default)]
    audio: Option<Value>,
    #[serde(default)]
    modalities: Option<Vec<String>>,
    #[serde(default)]
    prediction: Option<Value>,
    #[serde(default)]
    reasoning_effort: Option<Value>,
    #[serde(default)]
    web_search_options: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(flatten)]
    pub common: Common,
    prompt: Value,
    /// Legacy: the number of alternatives per token (0 to 5).
    #[serde(default)]
    logprobs: Option<usize>,
    #[serde(default)]
    echo: Option<bool>,
    #[serde(default)]
    best_of: Option<usize>,
    #[serde(default)]
    suffix: Option<String>,
}

/// A checked request: what to generate and how to answer.
#[derive(Debug, Clone)]
pub struct Job {
    /// Chat messages (system, user, assistant; `developer` as system), or the raw prompt.
    pub input: Input,
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: Option<f64>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub stop: Vec<String>,
    pub seed: u64,
    /// Log-probabilities asked for, with this many alternatives per token.
    pub top_logprobs: Option<usize>,
}

/// What the model continues.
#[derive(Debug, Clone)]
pub enum Input {
    Chat(Vec<ChatMessage>),
    Text(String),
}

impl ChatRequest {
    /// Reads a body, refusing unknown fields by name.
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        parse(
            body,
            &[
                "messages",
                "max_completion_tokens",
                "logprobs",
                "top_logprobs",
                "response_format",
                "parallel_tool_calls",
                "tools",
                "tool_choice",
                "functions",
                "function_call",
                "audio",
                "modalities",
                "prediction",
                "reasoning_effort",
                "web_search_options",
            ],
        )
    }

    /// The job, or a 400 naming the field.
    pub fn job(self, max_tokens: usize) -> Result<Job, ApiError> {
        let refused = [
            ("tools", self.tools.is_some()),
            ("tool_choice", self.tool_choice.is_some()),
            ("functions", self.functions.is_some()),
            ("function_call", self.function_call.is_some()),
            ("audio", self.audio.is_some()),
            ("prediction", self.prediction.is_some()),
            ("reasoning_effort", self.reasoning_effort.is_some()),
            ("web_search_options", self.web_search_options.is_some()),
            ("parallel_tool_calls", self.parallel_tool_calls == Some(true)),
        ];
        if let Some((name, _)) = refused.iter().find(|(_, given)| *given) {
            return Err(
                ApiError::bad_request(format!("{name} is not supported: this server's models answer in text, with no tools")).param(*name)
            );
        }
        if let Some(m) = self.modalities.as_ref().filter(|m| m.iter().any(|x| x != "text")) {
            return Err(ApiError::bad_request(format!("modalities {m:?}: only \"text\" is supported")).param("modalities"));
        }
        if let Some(f) = &self.response_format {
            match f.get("type").and_then(Value::as_str) {
                Some("text") => {}
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "response_format {other:?} is not supported: this server has no constrained decoding (only \"text\")"
                    ))
                    .param("response_format"));
                }
                None => return Err(ApiError::bad_request("response_format needs a \"type\"").param("response_format")),
            }
        }
        let max = match (self.common.max_tokens, self.max_completion_tokens) {
            (Some(a), Some(b)) if a != b => {
                return Err(
                    ApiError::bad_request(format!("max_tokens {a} and max_completion_tokens {b} disagree: give one")).param("max_tokens")
                );
            }
            (a, b) => a.or(b),
        };
        let top_logprobs = match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (false, Some(_)) => return Err(ApiError::bad_request("top_logprobs needs logprobs: true").param("top_logprobs")),
            (false, None) => None,
            (true, k) => Some(k.unwrap_or(0)),
        };
        if top_logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(ApiError::bad_request(format!("top_logprobs must be 0 to {MAX_TOP_LOGPROBS}")).param("top_logprobs"));
        }
        let messages = messages(self.messages)?;
        self.common.job(Input::Chat(messages), max, max_tokens, top_logprobs)
    }
}

impl CompletionRequest {
    /// Reads a body, refusing unknown fields by name.
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        parse(body, &["prompt", "logprobs", "echo", "best_of", "suffix"])
    }

    /// The job, or a 400 naming the field.
    pub fn job(self, max_tokens: usize) -> Result<Job, ApiError> {
        if self.echo == Some(true) {
            return Err(ApiError::bad_request("echo is not supported: the answer holds the completion only").param("echo"));
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return Err(ApiError::bad_request("best_of above 1 is not supported (ask for n choices instead)").param("best_of"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::bad_request("suffix is not supported: this server's models do not fill in the middle").param("suffix"));
        }
        let prompt = match &self.prompt {
            Value::String(p) => p.clone(),
            Value::Array(a) if a.len() == 1 && a[0].is_string() => a[0].as_str().unwrap_or_default().to_owned(),
            Value::Array(_) => {
                return Err(ApiError::bad_request(
                    "prompt: one string (or a list of one) is supported; send other prompts as other requests",
                )
                .param("prompt"));
            }
            _ => return Err(ApiError::bad_request("prompt must be a string").param("prompt")),
        };
        if prompt.is_empty() {
            return Err(ApiError::bad_request("prompt is empty").param("prompt"));
        }
        if self.logprobs.is_some_and(|k| k > 5) {
            return Err(ApiError::bad_request("logprobs must be 0 to 5").param("logprobs"));
        }
        let max = self.common.max_tokens;
        self.common.job(Input::Text(prompt), max, max_tokens, self.logprobs)
    }
}

impl Common {
    fn job(self, input: Input, max: Option<usize>, server_max: usize, top_logprobs: Option<usize>) -> Result<Job, ApiError> {
        let max_tokens = max.unwrap_or(server_max);
        if max_tokens == 0 || max_tokens > server_max {
            return Err(ApiError::bad_request(format!("max_tokens {max_tokens} is outside 1..={server_max}")).param("max_tokens"));
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(ApiError::bad_request("temperature must be in [0, 2]").param("temperature"));
        }
        if self.top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(ApiError::bad_request("top_p must be in (0, 1]").param("top_p"));
        }
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(ApiError::bad_request(format!("n must be 1 to {MAX_N}")).param("n"));
        }
        for (name, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(ApiError::bad_request(format!("{name} is not supported (only 0)")).param(name));
            }
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(ApiError::bad_request("logit_bias is not supported").param("logit_bias"));
        }
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOP || stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_request(format!("stop: up to {MAX_STOP} non-empty strings")).param("stop"));
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::bad_request("stream_options is only allowed with stream: true").param("stream_options"));
        }
        Ok(Job {
            input,
            max_tokens,
            temperature: self.temperature.unwrap_or(0.0),
            top_p: self.top_p,
            n,
            stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            stop,
            seed: self.seed.unwrap_or(0),
            top_logprobs,
        })
    }
}

/// The messages as the chat template takes them: text parts joined, `developer` as `system`.
fn messages(given: Vec<Message>) -> Result<Vec<ChatMessage>, ApiError> {
    if given.is_empty() {
        return Err(ApiError::bad_request("messages is empty").param("messages"));
    }
    let mut out = Vec::with_capacity(given.len());
    for (i, m) in given.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages[{i}].role {other:?} is not supported (system, developer, user or assistant)"
                ))
                .param(format!("messages[{i}].role")));
            }
        };
        let content = match m.content {
            None => return Err(ApiError::bad_request(format!("messages[{i}].content is missing")).param(format!("messages[{i}].content"))),
            Some(Content::Text(t)) => t,
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        (Some("text"), None) => {
                            return Err(ApiError::bad_request(format!("messages[{i}].content[{j}] has no text"))
                                .param(format!("messages[{i}].content[{j}].text")));
                        }
                        (kind, _) => {
                            return Err(ApiError::bad_request(format!(
                                "messages[{i}].content[{j}].type {:?} is not supported (text only)",
                                kind.unwrap_or("")
                            ))
                            .param(format!("messages[{i}].content[{j}].type")));
                        }
                    }
                }
                text
            }
        };
        if content.trim().is_empty() {
            return Err(ApiError::bad_request(format!("messages[{i}].content is empty")).param(format!("messages[{i}].content")));
        }
        out.push(ChatMessage { role: role.to_owned(), content });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<Job, ApiError> {
        ChatRequest::parse(serde_json::from_str(body).expect("JSON"))?.job(64)
    }

    fn completion(body: &str) -> Result<Job, ApiError> {
        CompletionRequest::parse(serde_json::from_str(body).expect("JSON"))?.job(64)
    }

    #[test]
    fn chat_requests_are_read_as_openai_does() {
        let j = chat(
            r#"{"model": "m", "messages": [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "aspirin?"}]}],
                "max_completion_tokens": 9, "stop": "\n", "n": 2, "logprobs": true, "top_logprobs": 3, "seed": 7,
                "user": "u1", "response_format": {"type": "text"}, "stream": true, "stream_options": {"include_usage": true}}"#,
        )
        .expect("valid");
        let Input::Chat(m) = &j.input else { panic!("chat") };
        assert_eq!((m[0].role.as_str(), m[1].content.as_str()), ("system", "What is aspirin?"));
        assert_eq!((j.max_tokens, j.n, j.seed, j.top_logprobs, j.include_usage), (9, 2, 7, Some(3), true));
        assert_eq!(j.stop, ["\n"]);
    }

    #[test]
    fn what_is_not_supported_is_refused_by_name() {
        let base = r#""model": "m", "messages": [{"role": "user", "content": "hi"}]"#;
        for (extra, named) in [
            (r#""tools": []"#, "tools"),
            (r#""response_format": {"type": "json_object"}"#, "response_format"),
            (r#""top_logprobs": 2"#, "top_logprobs"),
            (r#""n": 9"#, "n"),
            (r#""max_tokens": 5, "max_completion_tokens": 6"#, "max_tokens"),
            (r#""stop": ["a", "b", "c", "d", "e"]"#, "stop"),
            (r#""presence_penalty": 0.5"#, "presence_penalty"),
            (r#""stream_options": {"include_usage": true}"#, "stream_options"),
            (r#""frobnicate": 1"#, "frobnicate"),
        ] {
            let e = chat(&format!("{{{base}, {extra}}}")).expect_err(extra);
            assert!(e.message.contains(named), "{extra}: {}", e.message);
        }
        let e = chat(r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}"#)
            .expect_err("image");
        assert!(e.message.contains("messages[0].content[0].type \"image_url\""), "{}", e.message);
        let e = chat(r#"{"model": "m", "messages": [{"role": "tool", "content": "x"}]}"#).expect_err("tool role");
        assert!(e.message.contains("messages[0].role \"tool\""), "{}", e.message);
    }

    #[test]
    fn completion_requests_take_one_prompt() {
        let j = completion(r#"{"model": "m", "prompt": ["Aspirin is"], "logprobs": 2, "max_tokens": 4}"#).expect("valid");
        assert!(matches!(&j.input, Input::Text(p) if p == "Aspirin is"));
        assert_eq!((j.max_tokens, j.top_logprobs), (4, Some(2)));
        assert!(completion(r#"{"model": "m", "prompt": "x", "echo": true}"#).expect_err("echo").message.contains("echo"));
        assert!(completion(r#"{"model": "m", "prompt": "x", "messages": []}"#).expect_err("chat field").message.contains("\"messages\""));
    }
}
