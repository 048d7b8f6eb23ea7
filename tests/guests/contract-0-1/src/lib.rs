//! An augmenter built against the frozen contract `medtune:plugin@0.1.0` (`wit/0.1.0/`),
//! with wit-bindgen and no SDK, as a plugin of that time was: its documents have no fields,
//! and its new records are texts only. It writes each concept mention in upper case, and
//! with the setting `join = true` it also joins the first two paragraphs of the text (so
//! the host cannot find the record's fields again and must say so).

wit_bindgen::generate!({ path: "../../../wit/0.1.0", world: "augmenter" });

use std::cell::Cell;

use exports::medtune::plugin::augmenter_api::Guest;
use medtune::plugin::types::{Annotated, Derived, PluginError, PluginInfo, PluginKind, Setting};

thread_local! {
    static JOIN: Cell<bool> = const { Cell::new(false) };
}

struct Upper;

impl Guest for Upper {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "contract-0-1".into(),
            version: "0.1.0".into(),
            kind: PluginKind::Augmenter,
            contract_version: "0.1.0".into(),
            description: "mentions in upper case, built for contract 0.1.0".into(),
        }
    }

    fn configure(settings: Vec<Setting>) -> Result<(), PluginError> {
        for s in settings {
            match (s.key.as_str(), s.value.as_str()) {
                ("join", v) => JOIN.set(v == "true"),
                (k, _) => return Err(PluginError::Config(format!("unknown setting {k}"))),
            }
        }
        Ok(())
    }

    fn augment(batch: Vec<Annotated>, _seed: u64) -> Vec<Result<Vec<Derived>, PluginError>> {
        batch
            .into_iter()
            .map(|doc| {
                let mut chars: Vec<char> = doc.document.text.chars().collect();
                if doc.mentions.is_empty() {
                    return Ok(vec![]);
                }
                for m in &doc.mentions {
                    for c in &mut chars[m.span.start as usize..m.span.end as usize] {
                        *c = c.to_ascii_uppercase();
                    }
                }
                let mut text: String = chars.into_iter().collect();
                if JOIN.get() {
                    text = text.replacen("\n\n", " ", 1);
                }
                Ok(vec![Derived { text, metadata: vec![], note: format!("{} mention(s) in upper case", doc.mentions.len()) }])
            })
            .collect()
    }
}

export!(Upper);
