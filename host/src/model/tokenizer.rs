//! The tokenizer: a Hugging Face `tokenizer.json`, or a byte-level BPE rebuilt with the
//! `tokenizers` crate from GGUF metadata (tokens, merges, control tokens, special ids); plus
//! the chat template: the model's own (Jinja, `model/chat.rs`), else ChatML
//! ([`DEFAULT_CHAT_TEMPLATE`]) for a model that ships none.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::ModelError;

/// One message of a chat.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// The chat template of a model that ships none: ChatML (the format SmolLM2, Qwen2 and
/// transformers' former default write), as Jinja.
pub const DEFAULT_CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + \
    '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Said once per process, the first time a model without a template writes a chat.
static DEFAULT_TEMPLATE_NOTE: std::sync::Once = std::sync::Once::new();

/// Text to token ids and back, with the model's special tokens and chat format.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The model's own chat template (else [`DEFAULT_CHAT_TEMPLATE`]), or why it cannot be used.
    chat: Result<super::chat::ChatTemplate, String>,
    /// Whether the model ships no template (chats are then written in ChatML).
    default_template: bool,
    /// Tokens that end a turn.
    pub stop_ids: Vec<u32>,
    /// The beginning-of-sequence id, if the model has one.
    pub bos_id: Option<u32>,
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// From GGUF metadata (`tokenizer.ggml.*`): byte-level BPE, digits split one by one, no
    /// prefix space, control tokens special.
    pub fn from_gguf(md: &HashMap<String, Value>) -> Result<Self, ModelError> {
        let get = |k: &str| md.get(k).ok_or_else(|| ModelError::Tokenizer(format!("missing {k}")));
        let model = get("tokenizer.ggml.model")?.to_string().map_err(tok_err)?;
        if model != "gpt2" {
            return Err(ModelError::Tokenizer(format!("tokenizer.ggml.model {model:?} (medtune builds byte-level BPE, \"gpt2\")")));
        }
        let strings = |k: &str| -> Result<Vec<String>, ModelError> {
            get(k)?.to_vec().map_err(tok_err)?.iter().map(|v| v.to_string().cloned().map_err(tok_err)).collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or_else(|| tok_err(format!("merge {m:?}"))))
            .collect::<Result<_, _>>()?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v.to_vec().map_err(tok_err)?.iter().map(|t| t.to_i32().unwrap_or(1)).collect(),
            None => Vec::new(),
        };
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]))));
        inner.with_decoder(Some(ByteLevel::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, t)| **t == 3)
            .map(|(s, _)| AddedToken::from(s.clone(), true))
            .collect();
        inner.add_special_tokens(special).map_err(tok_err)?;
        let id = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let template = md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).map(String::as_str).unwrap_or("");
        Self::finish(inner, template, id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"))
    }

    /// From a Hugging Face `tokenizer.json` (and `tokenizer_config.json` beside it, if any).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Format { path: path.to_owned(), message: e.to_string() })?;
        let cfg: serde_json::Value = path
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let token_id = |key: &str| {
            let text = match &cfg[key] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
                _ => None,
            };
            text.and_then(|t| inner.token_to_id(&t))
        };
        let (bos, eos) = (token_id("bos_token"), token_id("eos_token"));
        let template = cfg["chat_template"].as_str().unwrap_or("").to_owned();
        Self::finish(inner, &template, bos, eos)
    }

    fn finish(inner: tokenizers::Tokenizer, template_text: &str, bos: Option<u32>, eos: Option<u32>) -> Result<Self, ModelError> {
        let default_template = template_text.trim().is_empty();
        let source = if default_template { DEFAULT_CHAT_TEMPLATE } else { template_text };
        let mut stop_ids: Vec<u32> = eos.into_iter().collect();
        if source.contains("<|im_end|>") {
            stop_ids.extend(inner.token_to_id("<|im_end|>"));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let text = |id: Option<u32>| id.and_then(|i| inner.id_to_token(i)).unwrap_or_default();
        let chat = super::chat::ChatTemplate::new(source, &text(bos), &text(eos)).map_err(|e| e.to_string());
        Ok(Tokenizer { inner, chat, default_template, stop_ids, bos_id: bos })
    }

    /// Whether the model ships no chat template, so chats are written in ChatML
    /// ([`DEFAULT_CHAT_TEMPLATE`]).
    pub fn uses_default_template(&self) -> bool {
        self.default_template
    }

    /// Token ids of `text` (special tokens written in the text are recognized).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    /// Writes the tokenizer as a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.inner.save(path, false).map_err(tok_err)
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The chat as the model's template writes it (`add_generation_prompt`: ending where the
    /// assistant's answer starts); a model without a template gets [`DEFAULT_CHAT_TEMPLATE`],
    /// and the process says so once.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ModelError> {
        if self.default_template {
            DEFAULT_TEMPLATE_NOTE
                .call_once(|| tracing::warn!("the model ships no chat template: chats are written in ChatML, medtune's default"));
        }
        match &self.chat {
            Ok(t) => t.render(messages, add_generation_prompt),
            Err(e) => Err(ModelError::Tokenizer(e.clone())),
        }
    }

    /// The prompt for a chat, ending where the assistant's answer starts.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, ModelError> {
        self.render_chat(messages, true)
    }
}
