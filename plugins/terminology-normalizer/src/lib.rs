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
//! `fuzzy_min_len` (default 8), `min_score` (default 0), `link_min_score` (a field named
//! `mention` or `mention/TYPE` is one mention, a gold span to link: when no name matches in
//! it, the concept of the name nearest its whole text by character trigrams, of a group named
//! TYPE where one is, if at least this similar; default 0.5; above 1 never), `salts` (a
//! concept of the `chemical` group written with its counter-ion, "piperacillin sodium",
//! "lidocaine hydrochloride", is one mention of it; default true), `senses` (an abbreviation
//! inventory, `/vocab/abbreviations.tsv`: a mention field that is an abbreviation no name
//! matches, "OAB", is read as its one sense there, "overactive bladder"; default none),
//! `rewrites` (word rewrites learned from a corpus, `/vocab/rewrites.tsv`: a mention field its
//! names do not cover is tried with one word replaced, "pulmonary toxicity" as "pulmonary
//! disease", before its nearest name; default none).

use std::collections::HashSet;

use medtext::abbrev::{Inventory, is_abbreviation};
use medtext::{Match, Matcher, Options, Rewrites, fold_salts, link_defined_abbreviations, normalize_name, parse_concepts};
use medtune_plugin_sdk::{CharOffsets, Document, Mention, MentionRef, Normalizer, PluginError, Settings, Span, register_normalizer};

struct TerminologyNormalizer {
    matcher: Matcher,
    min_score: f32,
    /// Normalized text forms never taken for a concept.
    stop: HashSet<String>,
    /// Whether abbreviations the document defines are linked as their long forms.
    abbreviations: bool,
    /// The lowest similarity of a nearest name taken for a whole mention.
    link_min_score: f32,
    /// The semantic groups of the vocabulary, and each concept's as bits of that list.
    group_names: Vec<String>,
    groups: Vec<u64>,
    /// Whether each concept is never reported (the stop table's `id:` lines), by index.
    stopped: Vec<bool>,
    /// Whether any form or concept is stopped.
    stops: bool,
    /// The bit of the `chemical` group in `groups`, when drugs take their counter-ions.
    salts: Option<u64>,
    /// The abbreviation inventory a mention field that is an undefined abbreviation is read
    /// with (its one sense), when given.
    senses: Option<Inventory>,
    /// Word rewrites a mention field its names do not cover is tried with.
    rewrites: Rewrites,
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
        let types: Vec<String> =
            settings.get("types").unwrap_or("").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
        let mut rows = Vec::new();
        for path in paths.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(path)
                .map_err(|e| PluginError::MissingResource(format!("cannot read vocabulary {path}: {e} (is its folder granted?)")))?;
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
            // `tree:` lines say which branches the `id:` lines after them come from
            for first in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with("tree:")).filter_map(|l| l.split('\t').next()) {
                match first.strip_prefix("id:") {
                    Some(id) => drop(stop_ids.insert(id.trim().to_owned())),
                    None => drop(stop.insert(normalize_name(first))),
                }
            }
            stop.remove("");
        }
        let abbreviations = settings.parse_or("abbreviations", true)?;
        let link_min_score = settings.parse_or("link_min_score", 0.5f32)?;
        let mut group_names: Vec<String> = Vec::new();
        let groups = rows
            .iter()
            .map(|r| {
                r.groups.iter().fold(0u64, |bits, g| {
                    let i = group_names.iter().position(|n| n == g).unwrap_or_else(|| {
                        group_names.push(g.clone());
                        group_names.len() - 1
                    });
                    bits | 1u64.checked_shl(i as u32).unwrap_or(0)
                })
            })
            .collect();
        let stopped = rows.iter().map(|r| stop_ids.contains(&r.id)).collect();
        let matcher = Matcher::new(&rows, options);
        let stops = !stop.is_empty() || !stop_ids.is_empty();
        let salts = match settings.parse_or("salts", true)? {
            true => group_names.iter().position(|g| g == "chemical").and_then(|i| 1u64.checked_shl(i as u32)),
            false => None,
        };
        let senses = match settings.get("senses").map(str::trim).filter(|p| !p.is_empty()) {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    PluginError::MissingResource(format!("cannot read the abbreviation inventory {path}: {e} (is its folder granted?)"))
                })?;
                Some(Inventory::parse(&text).map_err(|e| PluginError::MissingResource(format!("{path}: {e}")))?)
            }
        };
        let rewrites = match settings.get("rewrites").map(str::trim).filter(|p| !p.is_empty()) {
            None => Rewrites::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| PluginError::MissingResource(format!("cannot read the rewrites {path}: {e} (is its folder granted?)")))?;
                Rewrites::parse(&text).map_err(|e| PluginError::MissingResource(format!("{path}: {e}")))?
            }
        };
        Ok(Self { matcher, min_score, stop, abbreviations, link_min_score, group_names, groups, stopped, stops, salts, senses, rewrites })
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
        // a field that is one mention: `Some(its entity type)`, `Some("")` when untyped
        let mention_types: Vec<Option<&str>> =
            doc.fields.iter().map(|f| f.name.strip_prefix("mention").filter(|t| t.is_empty() || t.starts_with('/'))).collect();
        // a mention's own text is neither a stop form nor a stopped concept: the annotators
        // marked it
        let stopped = |matched: &str, concept: u32, mention: bool| {
            !mention && (self.stopped[concept as usize] || self.stop.contains(&normalize_name(matched)))
        };
        let mut found: Vec<(&str, Vec<Match>)> = fields
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let text = match &offsets {
                    Some(o) => &doc.text[o.byte_at(field.start)..o.byte_at(field.end)],
                    None => doc.text.as_str(),
                };
                let mention = mention_types.get(i).copied().flatten();
                // a stopped name gives way to the names inside it ("creatine" of "creatine kinase")
                let mut matches = match self.stops {
                    false => self.matcher.find(text),
                    true => self.matcher.find_where(text, |matched, c| !stopped(matched, c, mention.is_some())),
                };
                if self.min_score > 0.0 {
                    matches.retain(|m| m.score >= self.min_score);
                }
                if let Some(bit) = self.salts {
                    fold_salts(text, &mut matches, |c| self.groups[c as usize] & bit != 0);
                }
                // an abbreviation no name matches is its one sense in the inventory, if any
                if let Some((kind, sense)) = mention.filter(|_| matches.is_empty()).and_then(|k| Some((k, self.only_sense(text)?))) {
                    let bit = self.type_bit(kind);
                    let named = self.matcher.find_where(sense, |_, c| bit.is_none_or(|b| self.groups[c as usize] & b != 0));
                    if covered(sense, &named) >= MIN_COVERED {
                        matches = named.into_iter().map(|m| whole(text, m)).collect();
                    }
                }
                // a mention its names cover only in part, with one word rewritten as the corpus
                // taught ("pulmonary toxicity": "pulmonary disease"), when its names then cover it
                if let Some(kind) = mention.filter(|_| covered(text, &matches) < MIN_COVERED)
                    && let Some(named) = self.rewritten(text, kind)
                {
                    matches = named;
                }
                // a mention its names cover only in part ("disease" of "adenovirus disease") is
                // its nearest name when one is near enough
                if let Some(kind) = mention.filter(|_| covered(text, &matches) < MIN_COVERED)
                    && let Some(m) = self.nearest(text, kind)
                {
                    matches = vec![m];
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
            // a composite concept (`D006470+D003556`, "hemorrhagic cystitis" as a corpus links
            // it) is a mention of each of its concepts
            mentions.extend(matches.into_iter().flat_map(|m| {
                let (ids, name) = self.matcher.concept(m.concept);
                ids.split('+').map(move |id| MentionRef {
                    span: Span { start: field.start + m.char_start, end: field.start + m.char_end },
                    id: id.into(),
                    preferred_name: name.into(),
                    score: m.score,
                })
            }));
        }
        Ok(mentions)
    }
}

/// The share of a mention's letters and digits its names must cover for them to stand.
const MIN_COVERED: f32 = 0.85;

/// `m`'s concept as a match of the whole of `text`.
fn whole(text: &str, m: Match) -> Match {
    Match { start: 0, end: text.len(), char_start: 0, char_end: text.chars().count() as u32, ..m }
}

/// The share of the letters and digits of `text` that `matches` cover.
fn covered(text: &str, matches: &[Match]) -> f32 {
    let mut covered = vec![false; text.len()];
    for m in matches {
        covered[m.start..m.end].iter_mut().for_each(|c| *c = true);
    }
    let (mut all, mut inside) = (0usize, 0usize);
    for (i, _) in text.char_indices().filter(|(_, c)| c.is_alphanumeric()) {
        all += 1;
        inside += usize::from(covered[i]);
    }
    if all == 0 { 1.0 } else { inside as f32 / all as f32 }
}

impl TerminologyNormalizer {
    /// The bit in `groups` of the group an entity type names (`/Disease`: `disease`), if any.
    fn type_bit(&self, kind: &str) -> Option<u64> {
        let kind = kind.trim_start_matches('/').to_lowercase();
        self.group_names.iter().position(|g| *g == kind).and_then(|i| 1u64.checked_shl(i as u32))
    }

    /// The one sense of an abbreviation ("OAB": "overactive bladder") in the inventory.
    fn only_sense(&self, text: &str) -> Option<&str> {
        let word = text.trim();
        match self.senses.as_ref()?.senses(word)? {
            [one] if is_abbreviation(word) => Some(one.long.as_str()),
            _ => None,
        }
    }

    /// The concepts of the first of `text`'s [`Rewrites::variants`] that names of an entity
    /// of type `kind` cover, as matches of the whole of `text`.
    fn rewritten(&self, text: &str, kind: &str) -> Option<Vec<Match>> {
        if self.rewrites.is_empty() {
            return None;
        }
        let bit = self.type_bit(kind);
        self.rewrites.variants(text).into_iter().find_map(|variant| {
            let named = self.matcher.find_where(&variant, |_, c| bit.is_none_or(|b| self.groups[c as usize] & b != 0));
            (!named.is_empty() && covered(&variant, &named) >= MIN_COVERED).then(|| named.into_iter().map(|m| whole(text, m)).collect())
        })
    }

    /// The whole of `text`, one mention of an entity of type `kind` (`/Disease`; empty when
    /// untyped), as the concept of its nearest name, when that is similar enough.
    fn nearest(&self, text: &str, kind: &str) -> Option<Match> {
        if self.link_min_score > 1.0 {
            return None;
        }
        let bit = self.type_bit(kind);
        // an acronym or a word of a few letters is no string to compare ("DEN", "Pb")
        let word = text.trim();
        if word.chars().count() < 4 || (word.len() <= 8 && word.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())) {
            return None;
        }
        let keep = |c: u32| bit.is_none_or(|b| self.groups[c as usize] & b != 0);
        let (concept, score) = self.matcher.nearest(text, keep).filter(|&(_, s)| s >= self.link_min_score)?;
        Some(Match { start: 0, end: text.len(), char_start: 0, char_end: text.chars().count() as u32, concept, score })
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
    senses: string = "", "an abbreviation inventory (abbreviation, senses): a gold mention that is an abbreviation no name matches is its one sense there (default: none)";
    salts: boolean = "true", "a chemical written with its counter-ion (piperacillin sodium) is one mention of the chemical";
    rewrites: string = "", "word rewrites learned from a corpus (from, to, times): a mention field its names do not cover is tried with one word replaced (default: none)";
    link_min_score: float = "0.5", "lowest similarity of the nearest name taken for a mention field no name matches (above 1: never)";
});
