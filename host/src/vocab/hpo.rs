//! The Human Phenotype Ontology (`hp.obo`): terms with their exact synonyms and MeSH
//! cross-references; obsolete terms are skipped.

/// One HPO term.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Term {
    /// `HP:0001250`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Exact synonyms.
    pub synonyms: Vec<String>,
    /// MeSH descriptor ids it is cross-referenced to (`xref: MSH:D012640`).
    pub mesh: Vec<String>,
}

/// The terms of an OBO file.
pub fn parse(obo: &str) -> Vec<Term> {
    let mut out = Vec::new();
    let mut cur: Option<(Term, bool)> = None;
    let mut flush = |cur: &mut Option<(Term, bool)>| {
        if let Some((t, obsolete)) = cur.take()
            && !obsolete
            && t.id.starts_with("HP:")
            && !t.name.is_empty()
        {
            out.push(t);
        }
    };
    for line in obo.lines() {
        let line = line.trim_end();
        if line.starts_with('[') {
            flush(&mut cur);
            if line == "[Term]" {
                cur = Some((Term::default(), false));
            }
            continue;
        }
        let Some((t, obsolete)) = cur.as_mut() else { continue };
        if let Some(v) = line.strip_prefix("id: ") {
            t.id = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("name: ") {
            t.name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("synonym: \"") {
            if let Some((text, rest)) = v.split_once('"')
                && rest.trim_start().starts_with("EXACT")
            {
                t.synonyms.push(text.replace("\\\"", "\""));
            }
        } else if let Some(v) = line.strip_prefix("xref: MSH:") {
            t.mesh.push(v.split_whitespace().next().unwrap_or("").to_owned());
        } else if line.starts_with("is_obsolete: true") {
            *obsolete = true;
        }
    }
    flush(&mut cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_terms_synonyms_and_mesh_xrefs() {
        let obo = "format-version: 1.2\n\n[Term]\nid: HP:0001250\nname: Seizure\n\
                   synonym: \"Epileptic seizure\" EXACT []\nsynonym: \"Fits\" RELATED []\n\
                   xref: MSH:D012640\nxref: UMLS:C0036572\n\n[Term]\nid: HP:0000001\nname: Gone\nis_obsolete: true\n\n[Typedef]\nid: part_of\n";
        let t = parse(obo);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].synonyms, vec!["Epileptic seizure"]);
        assert_eq!(t[0].mesh, vec!["D012640"]);
    }
}
