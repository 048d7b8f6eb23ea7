//! A licensed UMLS install's `MRCONSO.RRF`: English, unsuppressed strings grouped by CUI; the
//! preferred name is the string with TS=P, STT=PF, ISPREF=Y.

use std::collections::HashMap;

use super::table::Concept;

/// The concepts of an MRCONSO file; `Err` names the line that cannot be read.
pub fn parse(rrf: &str) -> Result<Vec<Concept>, (usize, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut by_cui: HashMap<String, (Option<String>, Vec<String>)> = HashMap::new();
    for (n, line) in rrf.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 18 {
            return Err((n + 1, format!("{} fields, MRCONSO.RRF has 18", f.len())));
        }
        let (cui, lat, ts, stt, ispref, suppress, text) = (f[0], f[1], f[2], f[4], f[6], f[16], f[14]);
        if cui.is_empty() || text.is_empty() {
            return Err((n + 1, "empty CUI or STR".into()));
        }
        if lat != "ENG" || !(suppress.is_empty() || suppress == "N") {
            continue;
        }
        let entry = by_cui.entry(cui.to_owned()).or_insert_with(|| {
            order.push(cui.to_owned());
            (None, Vec::new())
        });
        if ts == "P" && stt == "PF" && ispref == "Y" && entry.0.is_none() {
            entry.0 = Some(text.to_owned());
        } else if !entry.1.iter().any(|s| s == text) {
            entry.1.push(text.to_owned());
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|cui| {
            let (pref, mut syns) = by_cui.remove(&cui)?;
            let name = match pref {
                Some(p) => p,
                None if !syns.is_empty() => syns.remove(0),
                None => return None,
            };
            syns.retain(|s| *s != name);
            Some(Concept { id: cui, name, synonyms: syns, groups: Vec::new() })
        })
        .collect())
}
