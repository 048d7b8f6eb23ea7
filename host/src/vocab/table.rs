//! The vocabulary folder's files: `concepts.tsv` and `supplementary.tsv`
//! (`id<TAB>name<TAB>synonym|...<TAB>group|...`; the id of a name of several concepts at once,
//! learned from a corpus's composite mentions, is theirs joined by `+`) and `abbreviations.tsv`
//! (`abbreviation<TAB>sense|sense...`), the formats the default plugins read.

/// One concept with its names.
#[derive(Debug, Clone, PartialEq)]
pub struct Concept {
    /// Its id (MeSH descriptor, HPO term or UMLS CUI).
    pub id: String,
    /// Its preferred name.
    pub name: String,
    /// Other names.
    pub synonyms: Vec<String>,
    /// Its semantic groups (`disease`, `chemical`, ...; empty when not known).
    pub groups: Vec<String>,
}

fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r', '|'], " ").trim().to_owned()
}

/// `concepts.tsv`.
pub fn concepts_tsv(concepts: &[Concept], header: &str) -> String {
    let mut out = format!("# {header}\n# id\tpreferred name\tsynonyms (|-separated)\tsemantic groups (|-separated)\n");
    for c in concepts {
        let syns: Vec<String> = c.synonyms.iter().map(|s| clean(s)).filter(|s| !s.is_empty()).collect();
        let groups: Vec<String> = c.groups.iter().map(|s| clean(s)).filter(|s| !s.is_empty()).collect();
        out.push_str(&format!("{}\t{}\t{}\t{}\n", clean(&c.id), clean(&c.name), syns.join("|"), groups.join("|")));
    }
    out
}

/// `abbreviations.tsv`.
pub fn abbreviations_tsv(abbrevs: &[(String, Vec<String>)], header: &str) -> String {
    let mut out = format!("# {header}\n# abbreviation\tsenses (|-separated)\n");
    for (a, senses) in abbrevs {
        let senses: Vec<String> = senses.iter().map(|s| clean(s)).filter(|s| !s.is_empty()).collect();
        if !senses.is_empty() {
            out.push_str(&format!("{}\t{}\n", clean(a), senses.join("|")));
        }
    }
    out
}
