//! Tags each document with one mention whose concept id is the crate version (`V1.0.0`,
//! `V2.0.0`): the same source builds both versions used by the hot-swap tests. Settings (for
//! the reload tests): `prefix` replaces the `V`; `prefix_file` reads it from a granted file.

use medtune_plugin_sdk::{register_normalizer, Concept, Document, Mention, Normalizer, PluginError, Settings, Span};

struct Tagger {
    prefix: String,
}

impl Normalizer for Tagger {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let prefix = match (settings.get("prefix"), settings.get("prefix_file")) {
            (_, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| PluginError::MissingResource(format!("prefix_file {file}: {e}")))?
                .trim()
                .to_owned(),
            (Some(p), None) => p.to_owned(),
            (None, None) => "V".to_owned(),
        };
        Ok(Tagger { prefix })
    }

    fn normalize(&self, doc: &Document) -> Result<Vec<Mention>, PluginError> {
        if doc.text.is_empty() {
            return Ok(vec![]);
        }
        let version = env!("CARGO_PKG_VERSION");
        Ok(vec![Mention {
            span: Span { start: 0, end: 1 },
            concept: Concept { id: format!("{}{version}", self.prefix), preferred_name: format!("tagger {version}") },
            score: 1.0,
        }])
    }
}

register_normalizer!(Tagger,
    optional_grants: ["/tags"],
    settings: {
        prefix: string = "V", "what the concept id starts with";
        prefix_file: string = "", "a granted file holding the prefix";
    });
