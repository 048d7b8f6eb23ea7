//! Entity masking: each concept mention is replaced, with probability `rate`, by a typed
//! placeholder: `[PHENOTYPE]` for HPO terms, `[UMLS]` for UMLS concepts, `[MESH]` for MeSH
//! descriptors, `[CONCEPT]` otherwise. Makes one new record when something was masked.
//!
//! Settings: `rate` (default 0.15).

use medtune_plugin_sdk::{register_augmenter, Annotated, Augmenter, Derived, PluginError, Rng, Settings};

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
        let chars: Vec<char> = doc.document.text.chars().collect();
        let mut mentions: Vec<_> = doc.mentions.iter().collect();
        mentions.sort_by_key(|m| m.span.start);
        let mut text = String::with_capacity(doc.document.text.len());
        let mut at = 0usize;
        let mut masked = 0;
        for m in mentions {
            let (s, e) = (m.span.start as usize, m.span.end as usize);
            if s < at || e > chars.len() || rng.next_f64() >= self.rate {
                continue;
            }
            text.extend(&chars[at..s]);
            text.push_str(placeholder(&m.concept.id));
            at = e;
            masked += 1;
        }
        if masked == 0 {
            return Ok(vec![]);
        }
        text.extend(&chars[at..]);
        Ok(vec![Derived { text, metadata: vec![], note: format!("entity masking: {masked} mention(s) masked") }])
    }
}

register_augmenter!(EntityMask);
