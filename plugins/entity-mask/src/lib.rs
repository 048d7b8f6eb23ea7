//! Entity masking: each concept mention is replaced, with probability `rate`, by a typed
//! placeholder: `[PHENOTYPE]` for HPO terms, `[UMLS]` for UMLS concepts, `[MESH]` for MeSH
//! descriptors, `[CONCEPT]` otherwise, in every field of the record (question, context,
//! options, chat turns). Makes one new record when something was masked.
//!
//! Settings: `rate` (default 0.15).

use medtune_plugin_sdk::{register_augmenter, Annotated, Augmenter, Derived, PluginError, Rng, Settings, Span};

struct EntityMask {
    rate: f64,
}

fn placeholder(concept_id: &str) -> &'static str {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if concept_id.starts_with("HP:") {
        "[PHENOTYPE]"
    } else if concept_id.starts_with('C') && digits(&concept_id[1..]) {
        "[UMLS]"
    } else if concept_id.starts_with('D') && digits(&concept_id[1..]) {
        "[MESH]"
    } else {
        "[CONCEPT]"
    }
}

impl Augmenter for EntityMask {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let rate: f64 = settings.parse_or("rate", 0.15)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(PluginError::Config(format!("rate {rate} is not in [0, 1]")));
        }
        Ok(Self { rate })
    }

    fn augment(&self, doc: &Annotated, rng: &mut Rng) -> Result<Vec<Derived>, PluginError> {
        let chars = doc.document.text.chars().count();
        let mut mentions: Vec<_> = doc.mentions.iter().collect();
        mentions.sort_by_key(|m| m.span.start);
        let mut edits: Vec<(Span, String)> = Vec::new();
        let mut at = 0usize;
        for m in mentions {
            let (s, e) = (m.span.start as usize, m.span.end as usize);
            if s < at || e > chars || rng.next_f64() >= self.rate {
                continue;
            }
            edits.push((m.span, placeholder(&m.concept.id).to_owned()));
            at = e;
        }
        if edits.is_empty() {
            return Ok(vec![]);
        }
        let note = format!("entity masking: {} mention(s) masked", edits.len());
        Ok(vec![doc.document.rewrite(&edits)?.into_derived(note)])
    }
}

register_augmenter!(EntityMask,
    settings: { rate: float = "0.15", "chance that a mention is masked" });
