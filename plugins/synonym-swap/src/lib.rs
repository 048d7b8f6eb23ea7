//! Synonym replacement: each concept mention is swapped, with probability `rate`, for another
//! name of the same concept from the vocabulary (`/vocab/concepts.tsv`), in every field of the
//! record (question, context, options, chat turns). Makes `variants` new records per source
//! record (only those where at least one mention was swapped).
//!
//! Settings: `rate` (default 0.5), `variants` (default 1), `vocab` (default `/vocab/concepts.tsv`).

use std::collections::HashMap;

use medtext::parse_concepts;
use medtune_plugin_sdk::{register_augmenter, Annotated, Augmenter, Derived, PluginError, Rng, Settings, Span};

struct SynonymSwap {
    names: HashMap<String, Vec<String>>,
    rate: f64,
    variants: usize,
}

impl Augmenter for SynonymSwap {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let rate: f64 = settings.parse_or("rate", 0.5)?;
        let variants: usize = settings.parse_or("variants", 1)?;
        if !(0.0..=1.0).contains(&rate) || variants == 0 || variants > 16 {
            return Err(PluginError::Config(format!("rate {rate} must be in [0, 1] and variants {variants} in 1..=16")));
        }
        let path = settings.get("vocab").unwrap_or("/vocab/concepts.tsv").to_owned();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PluginError::MissingResource(format!("cannot read vocabulary {path}: {e} (is its folder granted?)")))?;
        let rows = parse_concepts(&text).map_err(|e| PluginError::MissingResource(format!("{path}: {e}")))?;
        let names = rows
            .into_iter()
            .filter(|r| !r.synonyms.is_empty())
            .map(|r| {
                let mut all = vec![r.preferred];
                all.extend(r.synonyms);
                (r.id, all)
            })
            .collect();
        Ok(Self { names, rate, variants })
    }

    fn augment(&self, doc: &Annotated, rng: &mut Rng) -> Result<Vec<Derived>, PluginError> {
        let chars: Vec<char> = doc.document.text.chars().collect();
        let mut out = Vec::new();
        for _ in 0..self.variants {
            let mut at = 0usize;
            let mut edits: Vec<(Span, String)> = Vec::new();
            let mut swaps = Vec::new();
            let mut mentions: Vec<_> = doc.mentions.iter().collect();
            mentions.sort_by_key(|m| m.span.start);
            for m in mentions {
                let (s, e) = (m.span.start as usize, m.span.end as usize);
                if s < at || e > chars.len() {
                    continue;
                }
                let Some(names) = self.names.get(&m.concept.id) else { continue };
                let surface: String = chars[s..e].iter().collect();
                let mut others: Vec<&String> = names.iter().filter(|n| !n.eq_ignore_ascii_case(&surface)).collect();
                // prefer natural word order over inverted headings ("Hospitals, Teaching")
                if others.iter().any(|n| !n.contains(", ")) {
                    others.retain(|n| !n.contains(", "));
                }
                if others.is_empty() || rng.next_f64() >= self.rate {
                    continue;
                }
                let pick = others[rng.below(others.len())];
                edits.push((m.span, pick.clone()));
                at = e;
                swaps.push(format!("{surface} -> {pick}"));
            }
            if swaps.is_empty() {
                continue;
            }
            out.push(doc.document.rewrite(&edits)?.into_derived(format!("synonym swap: {}", swaps.join("; "))));
        }
        Ok(out)
    }
}

register_augmenter!(SynonymSwap,
    grants: ["/vocab"],
    settings: {
        rate: float = "0.5", "chance that a mention is swapped for a synonym";
        variants: integer = "1", "new records per source record";
        vocab: string = "/vocab/concepts.tsv", "the concept table the synonyms come from";
    });
