//! Tags each document with one mention whose concept id is the crate version (`V1.0.0`,
//! `V2.0.0`): the same source builds both versions used by the hot-swap tests.

use medtune_plugin_sdk::{register_normalizer, Concept, Document, Mention, Normalizer, PluginError, Settings, Span};

struct Tagger;

impl Normalizer for Tagger {
    fn new(_settings: &Settings) -> Result<Self, PluginError> {
        Ok(Tagger)
    }

    fn normalize(&self, doc: &Document) -> Result<Vec<Mention>, PluginError> {
        if doc.text.is_empty() {
            return Ok(vec![]);
        }
        let version = env!("CARGO_PKG_VERSION");
        Ok(vec![Mention {
            span: Span { start: 0, end: 1 },
            concept: Concept { id: format!("V{version}"), preferred_name: format!("tagger {version}") },
            score: 1.0,
        }])
    }
}

register_normalizer!(Tagger);
