//! The model's own chat template: the Jinja text a GGUF (`tokenizer.chat_template`) or a
//! `tokenizer_config.json` (`chat_template`) ships, rendered with minijinja as Hugging Face's
//! `apply_chat_template` does (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`,
//! `raise_exception`, `strftime_now`, Python's string methods).

use minijinja::{Environment, Error, ErrorKind, Value, context};

use super::ModelError;
use super::tokenizer::ChatMessage;

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("bos", &self.bos).field("eos", &self.eos).finish_non_exhaustive()
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `strftime_now(format)`: the current date in the template (Llama 3.2's writes
/// "Today Date: 06 Dec 2026" into its system turn), in UTC.
fn strftime_now(format: String) -> Result<Value, Error> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Utc::now().format(&format))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: {format:?} is not a strftime format")))?;
    Ok(Value::from(out))
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the texts of the model's special tokens.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        // Hugging Face renders with trim_blocks and lstrip_blocks
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        env.set_syntax(syntax);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| ModelError::Tokenizer(format!("the chat template does not compile: {e}")))?;
        Ok(Self { env, bos: bos.to_owned(), eos: eos.to_owned() })
    }

    /// The chat as text; with `add_generation_prompt`, ending where the assistant's answer
    /// starts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ModelError> {
        let messages: Vec<Value> = messages.iter().map(|m| context! { role => m.role.clone(), content => m.content.clone() }).collect();
        let template = self.env.get_template("chat").map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        template
            .render(context! { messages, add_generation_prompt, bos_token => self.bos.clone(), eos_token => self.eos.clone() })
            .map_err(|e| ModelError::Tokenizer(format!("the chat template failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
        pairs.iter().map(|(r, c)| ChatMessage { role: (*r).into(), content: (*c).into() }).collect()
    }

    /// A Llama-3-style template (Python string methods, `raise_exception`, `bos_token`) renders
    /// as transformers renders it; a template's own exception is an error naming its message.
    #[test]
    fn templates_render_as_hugging_face_renders_them() {
        let llama3 = "{{ bos_token }}{% for message in messages %}{% if message['role'] not in ['system', 'user', 'assistant'] %}\
                      {{ raise_exception('unknown role ' + message['role']) }}{% endif %}\
                      {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\
                      {% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
        let t = ChatTemplate::new(llama3, "<|begin_of_text|>", "<|eot_id|>").expect("compiles");
        let text = t.render(&chat(&[("system", "Be brief."), ("user", " Hi ")]), true).expect("renders");
        assert_eq!(
            text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let err = t.render(&chat(&[("tool", "x")]), false).expect_err("unknown role");
        assert!(err.to_string().contains("unknown role tool"), "{err}");
        let date = ChatTemplate::new("{{ strftime_now('%Y-%m') }}", "", "").expect("compiles");
        assert_eq!(date.render(&[], false).expect("renders"), chrono::Utc::now().format("%Y-%m").to_string());
        let bad = ChatTemplate::new("{{ strftime_now('%Q') }}", "", "").expect("compiles");
        assert!(bad.render(&[], false).expect_err("not a format").to_string().contains("strftime_now"));
        let strip = ChatTemplate::new("{% for m in messages %}{{ m['content'].strip() }}|{% endfor %}", "", "").expect("compiles");
        assert_eq!(strip.render(&chat(&[("user", "  a  "), ("assistant", "b ")]), false).expect("renders"), "a|b|");
    }

    /// The default for a model without a template is ChatML, with and without the generation
    /// prompt.
    #[test]
    fn the_default_template_is_chatml() {
        let t = ChatTemplate::new(crate::model::tokenizer::DEFAULT_CHAT_TEMPLATE, "", "").expect("compiles");
        let turns = chat(&[("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello.")]);
        let whole = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n";
        assert_eq!(t.render(&turns, false).expect("renders"), whole);
        assert_eq!(t.render(&turns[..2], true).expect("renders"), &whole[..whole.len() - "Hello.<|im_end|>\n".len()]);
    }
}
