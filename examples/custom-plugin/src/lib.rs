//! drug-class-normalizer: finds drug names in a document and maps each to its drug class.
//!
//! The drug table is read from a folder the host grants read-only (`/vocab/drugs.tsv` by
//! default); the plugin has no other access to the machine. Settings:
//! - `table`: the table's path inside the grant (default `/vocab/drugs.tsv`);
//! - `min_len`: ignore names shorter than this (default 4).

use std::collections::HashMap;

use medtune_plugin_sdk::{
    register_normalizer, CharOffsets, Concept, Document, Mention, Normalizer, PluginError, Settings,
};

struct DrugClasses {
    /// lowercase drug name -> (class id, class name)
    table: HashMap<String, (String, String)>,
}

impl Normalizer for DrugClasses {
    fn new(settings: &Settings) -> Result<Self, PluginError> {
        let path = settings.get("table").unwrap_or("/vocab/drugs.tsv").to_owned();
        let min_len: usize = settings.parse_or("min_len", 4)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PluginError::MissingResource(format!("{path}: {e} (grant its folder as /vocab)")))?;
        let mut table = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let [name, id, class] = cols[..] else {
                return Err(PluginError::MissingResource(format!("{path}: line {}: expected 3 columns", n + 1)));
            };
            if name.len() >= min_len {
                table.insert(name.to_lowercase(), (id.to_owned(), class.to_owned()));
            }
        }
        Ok(Self { table })
    }

    fn normalize(&self, doc: &Document) -> Result<Vec<Mention>, PluginError> {
        // Spans are character offsets; Rust slices by bytes, so convert at the end.
        let offsets = CharOffsets::new(&doc.text);
        let mut found = Vec::new();
        for (start, word) in words(&doc.text) {
            if let Some((id, class)) = self.table.get(&word.to_lowercase()) {
                found.push(Mention {
                    span: offsets.span(start, start + word.len()),
                    concept: Concept { id: id.clone(), preferred_name: class.clone() },
                    score: 1.0,
                });
            }
        }
        Ok(found)
    }
}

/// The words of a text with their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

register_normalizer!(DrugClasses,
    grants: ["/vocab"],
    settings: {
        table: string = "/vocab/drugs.tsv", "the drug table (name, ATC class)";
        min_len: integer = "4", "shortest drug name matched";
    });
