//! The vocabulary table format: `id<TAB>preferred name<TAB>synonym|synonym...<TAB>group|group...`
//! (the last two columns optional).

use std::fmt;

/// One concept of a vocabulary table.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptRow {
    /// The concept id, e.g. a MeSH descriptor id.
    pub id: String,
    /// Its preferred name.
    pub preferred: String,
    /// Other names.
    pub synonyms: Vec<String>,
    /// Semantic groups (`disease`, `chemical`, ...), empty when the table gives none.
    pub groups: Vec<String>,
}

/// A line of a vocabulary table that cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for VocabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses a table; blank lines and lines starting with `#` are skipped.
pub fn parse_concepts(text: &str) -> Result<Vec<ConceptRow>, VocabError> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut cols = line.split('\t');
        let id = cols.next().unwrap_or("").trim();
        let preferred = cols.next().unwrap_or("").trim();
        if id.is_empty() || preferred.is_empty() {
            return Err(VocabError { line: n + 1, message: "expected `id<TAB>preferred name[<TAB>synonyms]`".into() });
        }
        let mut list = || -> Vec<String> {
            cols.next().unwrap_or("").split('|').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        };
        let (synonyms, groups) = (list(), list());
        rows.push(ConceptRow { id: id.to_owned(), preferred: preferred.to_owned(), synonyms, groups });
    }
    Ok(rows)
}
