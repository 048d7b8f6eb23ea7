//! The default terminology normalizer: finds vocabulary concepts (MeSH by default) in text,
//! field by field (a concept's name never runs from a question into its context).
//!
//! Settings: `vocab` (the tables inside the read-only folder the host grants, comma-separated;
//! default `/vocab/concepts.tsv`; add `/vocab/supplementary.tsv` for MeSH's supplementary
//! concepts), `types` (only concepts of these semantic groups, comma-separated, e.g.
//! `disease,chemical`; default: every concept), `stop` (a table of text forms never taken for
//! a concept, and `id:` lines of concepts never reported, one per line, as `medtune vocab build
//! --from-corpus` writes `/vocab/stop.tsv`; default none), `abbreviations` (an abbreviation the document defines, "indomethacin (IDM)",
//! is a mention of its long form's concept wherever it is written; default true),
//! `short_names` (names of one or two characters with a capital, `Na`, `K`, `DA`, matched as
//! written; default false),
//! `fuzzy_min_len` (default 8), `min_score` (default 0).

use std::collections::HashSet;

use medtext::{link_defined_abbreviations, normalize_name, parse_concepts, Match, Matcher, Options};
use medtune_plugin_sdk::{
    register_normalizer, CharOffsets, Document, Mention, MentionRef, Normalizer, PluginError, Settings, Span,
};

struct TerminologyNormalizer {
    matcher: Matcher,
    min_score: f32,
    /// Normalized text forms never taken for a concept.
    stop: HashSet<String>,
    /// Concepts never reported (the stop table's `id:` lines).
    stop_ids: HashSet<String>,
    /// Whether abbreviations the document defines are linked as their long forms.
    abbreviations: bool,
}

impl Normalizer for TerminologyNormalizer {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let paths = settings.get("vocab").unwrap_or("/vocab/concepts.tsv").to_owned();
        let defaults = Options::default();
        let options = Options {
            fuzzy_min_len: settings.parse_or("fuzzy_min_len", defaults.fuzzy_min_len)?,
            short_names: settings.parse_or("short_names", defaults.short_names)?,
            ..defaults
        };
        let min_score = settings.parse_or("min_score", 0.0f32)?;
        let types: Vec<String> = settings
            .get("types")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        let mut rows = Vec::new();
        for path in paths.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(path).map_err(|e| {
                PluginError::MissingResource(format!("cannot read vocabulary {path}: {e} (is its folder granted?)"))
            })?;
            let mut table = parse_concepts(&text).map_err(|e| PluginError::MissingResource(format!("{path}: {e}")))?;
            if !types.is_empty() {
                if !table.is_empty() && table.iter().all(|r| r.groups.is_empty()) {
                    return Err(PluginError::Config(format!(
                        "types = {:?}: the vocabulary {path} gives no semantic groups (build it again with `medtune vocab build`)",
                        types.join(",")
                    )));
                }
                table.retain(|r| r.groups.iter().any(|g| types.contains(g)));
            }
            rows.append(&mut table);
        }
        let (mut stop, mut stop_ids) = (HashSet::new(), HashSet::new());
        if let Some(path) = settings.get("stop").filter(|p| !p.trim().is_empty()) {
            let text = std::fs::read_to_string(path)
                .map_err(|e| PluginError::MissingResource(format!("cannot read the stop table {path}: {e} (is its folder granted?)")))?;
            for first in text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split('\t').next()) {
                match first.strip_prefix("id:") {
                    Some(id) => drop(stop_ids.insert(id.trim().to_owned())),
                    None => drop(stop.insert(normalize_name(first))),
                }
            }
            stop.remove("");
        }
        let abbreviations = settings.parse_or("abbreviations", true)?;
        Ok(Self { matcher: Matcher::new(&rows, options), min_score, stop, stop_ids, abbreviations })
    }

    fn normalize(&self, doc: &Document) -> Result<Vec<Mention>, PluginError> {
        Ok(self.normalize_borrowed(doc)?.into_iter().map(Mention::from).collect())
    }

    /// The concepts' ids and names borrowed from the matcher: no copy per mention.
    fn normalize_borrowed(&self, doc: &Document) -> Result<Vec<MentionRef<'_>>, PluginError> {
        // a document without fields is matched whole, with no offset table to build
        let (offsets, fields): (Option<CharOffsets>, Vec<Span>) = match doc.fields.is_empty() {
            true => (None, vec![Span { start: 0, end: 0 }]),
            false => (Some(CharOffsets::new(&doc.text)), doc.fields.iter().map(|f| f.span).collect()),
        };
        let stopped = |text: &str, m: &Match| {
            self.stop_ids.contains(self.matcher.concept(m.concept).0) || self.stop.contains(&normalize_name(&text[m.start..m.end]))
        };
        let mut found: Vec<(&str, Vec<Match>)> = fields
            .iter()
            .map(|field| {
                let text = match &offsets {
                    Some(o) => &doc.text[o.byte_at(field.start)..o.byte_at(field.end)],
                    None => doc.text.as_str(),
                };
                let mut matches = self.matcher.find(text);
                if self.min_score > 0.0 || !self.stop.is_empty() || !self.stop_ids.is_empty() {
                    matches.retain(|m| m.score >= self.min_score && !stopped(text, m));
                }
                (text, matches)
            })
            .collect();
        if self.abbreviations {
            link_defined_abbreviations(&mut found);
        }
        // Sized up front: a growing vector is a reallocation and a copy each time it doubles.
        let mut mentions = Vec::with_capacity(found.iter().map(|(_, m)| m.len()).sum());
        for (field, (_, matches)) in fields.iter().zip(found) {
            mentions.extend(matches.into_iter().map(|m| {
                let (id, name) = self.matcher.concept(m.concept);
                MentionRef {
                    span: Span { start: field.start + m.char_start, end: field.start + m.char_end },
                    id: id.into(),
                    preferred_name: name.into(),
                    score: m.score,
                }
            }));
        }
        Ok(mentions)
    }
}

register_normalizer!(TerminologyNormalizer,
    grants: ["/vocab"],
    settings: {
        vocab: string = "/vocab/concepts.tsv", "the concept tables (id, preferred name, synonyms, groups), comma-separated";
        types: string = "", "only concepts of these semantic groups, comma-separated (default: all)";
        stop: string = "", "a table of text forms never taken for a concept (default: none)";
        abbreviations: boolean = "true", "link abbreviations the document defines as their long forms";
        short_names: boolean = "false", "match names of one or two characters with a capital (Na, K) as written";
        fuzzy_min_len: integer = "8", "shortest word matched with one edit allowed";
        min_score: float = "0", "lowest match score kept";
    });
