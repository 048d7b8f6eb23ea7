//! MeSH descriptors from `subjects_mesh.csv` (`id,scheme,subject`): descriptor rows only
//! (`.../mesh/D000001`, not descriptor/qualifier pairs), with the un-inverted form of inverted
//! headings as a synonym ("Intubation, Intratracheal" -> "Intratracheal Intubation").

use super::table::Concept;

/// The descriptors of the CSV; `Err` names the line that cannot be read.
pub fn parse(csv: &str) -> Result<Vec<Concept>, (usize, String)> {
    let mut out = Vec::new();
    for (n, line) in csv.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let mut cols = line.splitn(3, ',');
        let (Some(url), Some(_scheme), Some(subject)) = (cols.next(), cols.next(), cols.next()) else {
            return Err((n + 1, "expected id,scheme,subject".into()));
        };
        let Some(id) = url.rsplit('/').next() else { continue };
        let descriptor = id.len() > 1 && id.starts_with('D') && id[1..].bytes().all(|b| b.is_ascii_digit());
        if !descriptor {
            continue;
        }
        let name = unquote(subject);
        let mut synonyms = Vec::new();
        if let Some(u) = uninvert(&name) {
            synonyms.push(u);
        }
        out.push(Concept { id: id.to_owned(), name, synonyms, groups: Vec::new() });
    }
    Ok(out)
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => s.to_owned(),
    }
}

/// "Intubation, Intratracheal" -> "Intratracheal Intubation" (one comma; digits only in a
/// type: "Diabetes Mellitus, Type 2" -> "Type 2 Diabetes Mellitus", not "Aged, 80 and over").
pub fn uninvert(name: &str) -> Option<String> {
    let (head, tail) = name.split_once(", ")?;
    let typed = tail.strip_prefix("Type ").is_some_and(|t| !t.is_empty() && !t.contains(' '));
    if tail.contains(", ") || (!typed && name.chars().any(|c| c.is_ascii_digit())) {
        return None;
    }
    Some(format!("{tail} {head}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_descriptors_and_uninverts() {
        let csv = "id,scheme,subject\n\
                   https://id.nlm.nih.gov/mesh/D007442,MeSH,\"Intubation, Intratracheal\"\n\
                   https://id.nlm.nih.gov/mesh/D007442Q000009,MeSH,\"Intubation, Intratracheal/adverse effects\"\n\
                   https://id.nlm.nih.gov/mesh/D000369,MeSH,\"Aged, 80 and over\"\n";
        let c = parse(csv).expect("valid");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].id, "D007442");
        assert_eq!(c[0].name, "Intubation, Intratracheal");
        assert_eq!(c[0].synonyms, vec!["Intratracheal Intubation"]);
        assert!(c[1].synonyms.is_empty());
        assert_eq!(uninvert("Diabetes Mellitus, Type 2").as_deref(), Some("Type 2 Diabetes Mellitus"));
        assert_eq!(uninvert("Aged, 80 and over"), None);
    }
}
