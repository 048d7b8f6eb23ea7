//! The tokenizer: a Hugging Face `tokenizer.json`, or a byte-level BPE rebuilt with the
//! `tokenizers` crate from GGUF metadata (tokens, merges, control tokens, special ids); plus
//! the chat template: the model's own (Jinja, `model/chat.rs`), else ChatML
//! ([`DEFAULT_CHAT_TEMPLATE`]) for a model that ships none.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
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

/// How Qwen2's tokenizer splits text before BPE (its tokenizer.json's `Split` regex): digits
/// one by one.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How Llama 3's tokenizer splits text before BPE: digits in groups of up to three.
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Said once per process, the first time a model without a template writes a chat.
static DEFAULT_TEMPLATE_NOTE: std::sync::Once = std::sync::Once::new();

/// Text to token ids and back, with the model's special tokens and chat format.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The model's own chat template (else [`DEFAULT_CHAT_TEMPLATE`]), or why it cannot be used.
    chat: Result<super::chat::ChatTemplate, String>,
    /// The model's own template's text; empty when it ships none (chats are then written in
    /// ChatML).
    template: String,
    /// Tokens that end a turn: the end-of-sequence token and every id of
    /// `generation_config.json`'s `eos_token_id` (Llama 3's `<|eot_id|>` and `<|end_of_text|>`).
    pub stop_ids: Vec<u32>,
    /// The beginning-of-sequence id, if the model has one (the template writes it: prompts are
    /// encoded without adding special tokens, as `apply_chat_template` does).
    pub bos_id: Option<u32>,
    /// The end-of-sequence id the tokenizer names, if any.
    pub eos_id: Option<u32>,
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// A JSON file beside `tokenizer.json`: `Null` when it is not there, an error naming it when
/// it is there but unreadable.
fn json_beside(path: &Path) -> Result<serde_json::Value, ModelError> {
    if !path.is_file() {
        return Ok(serde_json::Value::Null);
    }
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Read { path: path.to_owned(), source })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Format { path: path.to_owned(), message: e.to_string() })
}

/// A token id in a JSON file (`eos_token_id`), named with the file when it is not one.
fn token_number(v: &serde_json::Value, path: &Path) -> Result<u32, ModelError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ModelError::Format { path: path.to_owned(), message: format!("eos_token_id {v} is not a token id") })
}

impl Tokenizer {
    /// From GGUF metadata (`tokenizer.ggml.*`): byte-level BPE split as `tokenizer.ggml.pre`
    /// names (SmolLM2's digits one by one, Qwen2's and Llama 3's regexes; another name is
    /// refused), no prefix space, control tokens special.
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
        let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map_or("default", String::as_str);
        let split = |pattern: &str| -> Result<PreTokenizerWrapper, ModelError> {
            let regex = SplitPattern::Regex(pattern.to_owned());
            Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Split(Split::new(regex, SplitDelimiterBehavior::Isolated, false).map_err(tok_err)?),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
            ])))
        };
        // llama.cpp's pre-tokenizer names, as the models' own tokenizer.json files split
        let pre_tokenizer = match pre {
            "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            ])),
            "default" | "gpt2" => PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            "qwen2" => {
                inner.with_normalizer(Some(tokenizers::normalizers::unicode::NFC)).map_err(tok_err)?;
                split(QWEN2_SPLIT)?
            }
            "llama-bpe" | "llama3" => split(LLAMA3_SPLIT)?,
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "tokenizer.ggml.pre {other:?}: medtune splits text as smollm, gpt2, qwen2 and llama-bpe do, not as this"
                )));
            }
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
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
        // llama.cpp's end-of-turn and end-of-message tokens end a turn too
        let stops = [id("tokenizer.ggml.eot_token_id"), id("tokenizer.ggml.eom_token_id")].into_iter().flatten().collect();
        Self::finish(inner, template, id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"), stops)
    }

    /// From a Hugging Face `tokenizer.json` and what lies beside it: `tokenizer_config.json`
    /// (BOS and EOS tokens, the chat template), `chat_template.jinja` (where transformers
    /// saves the template now), `generation_config.json` and `config.json` (their
    /// `eos_token_id`, a number or a list). A file that is there but unreadable is an error.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Format { path: path.to_owned(), message: e.to_string() })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let cfg = json_beside(&dir.join("tokenizer_config.json"))?;
        let token_id = |key: &str| {
            let text = match &cfg[key] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(str::to_owned),
                _ => None,
            };
            text.and_then(|t| inner.token_to_id(&t))
        };
        let (bos, eos) = (token_id("bos_token"), token_id("eos_token"));
        let jinja = dir.join("chat_template.jinja");
        let template = match &cfg["chat_template"] {
            serde_json::Value::String(t) => t.clone(),
            // the older list of named templates: the default one
            serde_json::Value::Array(named) => {
                named.iter().find(|t| t["name"] == "default").and_then(|t| t["template"].as_str()).map(str::to_owned).ok_or_else(|| {
                    ModelError::Format {
                        path: dir.join("tokenizer_config.json"),
                        message: "chat_template: no template named \"default\"".into(),
                    }
                })?
            }
            _ if jinja.is_file() => std::fs::read_to_string(&jinja).map_err(|source| ModelError::Read { path: jinja.clone(), source })?,
            _ => String::new(),
        };
        let mut stops = Vec::new();
        for file in ["generation_config.json", "config.json"] {
            let path = dir.join(file);
            match &json_beside(&path)?["eos_token_id"] {
                serde_json::Value::Null => {}
                serde_json::Value::Array(ids) => stops.extend(ids.iter().map(|i| token_number(i, &path)).collect::<Result<Vec<_>, _>>()?),
                one => stops.push(token_number(one, &path)?),
            }
        }
        Self::finish(inner, &template, bos, eos, stops)
    }

    fn finish(
        inner: tokenizers::Tokenizer,
        template_text: &str,
        bos: Option<u32>,
        eos: Option<u32>,
        stops: Vec<u32>,
    ) -> Result<Self, ModelError> {
        let template = if template_text.trim().is_empty() { String::new() } else { template_text.to_owned() };
        let source = if template.is_empty() { DEFAULT_CHAT_TEMPLATE } else { &template };
        let mut stop_ids: Vec<u32> = eos.into_iter().chain(stops).collect();
        if source.contains("<|im_end|>") {
            stop_ids.extend(inner.token_to_id("<|im_end|>"));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let text = |id: Option<u32>| id.and_then(|i| inner.id_to_token(i)).unwrap_or_default();
        let chat = super::chat::ChatTemplate::new(source, &text(bos), &text(eos)).map_err(|e| e.to_string());
        Ok(Tokenizer { inner, chat, template, stop_ids, bos_id: bos, eos_id: eos })
    }

    /// Whether the model ships no chat template, so chats are written in ChatML
    /// ([`DEFAULT_CHAT_TEMPLATE`]).
    pub fn uses_default_template(&self) -> bool {
        self.template.is_empty()
    }

    /// Token ids of `text` (special tokens written in the text are recognized).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.inner.encode(text, false).map_err(tok_err)?.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.inner.decode(ids, true).map_err(tok_err)
    }

    /// Writes the tokenizer into `dir` as Hugging Face does: `tokenizer.json`,
    /// `tokenizer_config.json` with the BOS and EOS tokens and the model's own chat template,
    /// and `generation_config.json` with the tokens that end a turn (each file atomically), so
    /// the folder chats and stops as the model did.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            crate::atomic::write(&path, bytes).map_err(|source| ModelError::Write { path, source })
        };
        write("tokenizer.json", self.inner.to_string(false).map_err(tok_err)?.as_bytes())?;
        let text = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i));
        let mut cfg = serde_json::json!({ "bos_token": text(self.bos_id), "eos_token": text(self.eos_id) });
        if !self.template.is_empty() {
            cfg["chat_template"] = self.template.clone().into();
        }
        write("tokenizer_config.json", serde_json::to_string_pretty(&cfg).map_err(tok_err)?.as_bytes())?;
        let generation = serde_json::json!({ "bos_token_id": self.bos_id, "eos_token_id": self.stop_ids });
        write("generation_config.json", serde_json::to_string_pretty(&generation).map_err(tok_err)?.as_bytes())
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The chat as the model's template writes it (`add_generation_prompt`: ending where the
    /// assistant's answer starts); a model without a template gets [`DEFAULT_CHAT_TEMPLATE`],
    /// and the process says so once.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ModelError> {
        if self.template.is_empty() {
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
