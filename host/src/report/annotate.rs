//! The report of an `annotate` task (`runs/<name>/report.html`): the scores per entity type
//! (gold-span linking, document-level concepts, mentions), the misses of each kind with their
//! contexts, and the plugins that made the mentions.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::{CSS, num};
use crate::artifacts::{DataManifest, EvalScores};
use crate::config::Config;
use crate::pipeline::Miss;
use crate::train::plot::escape;

/// Misses shown per kind (all are in `eval/misses.jsonl`).
const MISSES_SHOWN: usize = 40;

/// Writes the report of `config`'s annotate run with its scores `eval`; returns its path.
pub fn write(config: &Config, eval: &EvalScores) -> std::io::Result<PathBuf> {
    let run = config.run_dir();
    let score = |name: &str| eval.score(name);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>medtune run {name}</title><style>{CSS}</style></head><body><h1>medtune run <code>{name}</code>: concept annotation</h1>",
        name = escape(&config.name)
    );
    let _ = write!(
        h,
        "<section id=\"summary\"><h2>Summary</h2><table><tr><th>documents scored</th><td>{}</td></tr><tr><th>split</th><td>{}</td></tr>\
         <tr><th>gold mentions linked</th><td>{}</td></tr><tr><th>document-level F</th><td>{}</td></tr></table></section>",
        eval.questions,
        escape(&eval.split.to_string()),
        num(score("link/accuracy")),
        num(score("document/f1"))
    );

    // one row for all types, one per type
    let types: Vec<&str> = eval.scores.keys().filter_map(|k| k.strip_prefix("link/count/")).collect();
    h.push_str(
        "<section id=\"per-type\"><h2>Per entity type</h2><table><tr><th>type</th><th>gold mentions</th><th>linking accuracy</th>\
         <th>document P</th><th>document R</th><th>document F</th><th>mention exact F</th><th>mention overlap F</th></tr>",
    );
    for t in std::iter::once("").chain(types.iter().copied()) {
        let s = if t.is_empty() { String::new() } else { format!("/{t}") };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if t.is_empty() { "all".to_owned() } else { escape(t) },
            num(score(&format!("link/count{s}"))),
            num(score(&format!("link/accuracy{s}"))),
            num(score(&format!("document/precision{s}"))),
            num(score(&format!("document/recall{s}"))),
            num(score(&format!("document/f1{s}"))),
            num(score(&format!("mention-exact/f1{s}"))),
            num(score(&format!("mention-overlap/f1{s}"))),
        );
    }
    h.push_str(
        "</table><p>Linking: the concept the chain gives each gold mention. Document: the set of concepts of each document \
         (BioCreative's measure). Mentions: a found mention with one of the gold ids at the same span (exact) or an overlapping one. \
         A type's precision is shown where every concept found has a type (its semantic group in the vocabulary).</p></section>",
    );

    // misses by kind
    let misses: Vec<Miss> = std::fs::read_to_string(run.join("eval/misses.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    h.push_str("<section id=\"misses\"><h2>Misses</h2>");
    for (kind, title) in [
        ("link", "Gold mentions linked to another concept, or to none"),
        ("missed", "Concepts of a document not found"),
        ("extra", "Concepts found that the gold lacks"),
    ] {
        let of_kind: Vec<&Miss> = misses.iter().filter(|m| m.kind == kind).collect();
        let _ = write!(
            h,
            "<h3>{title} ({}; the first {})</h3><table><tr><th>document</th><th>type</th><th>gold</th><th>found</th><th>context</th></tr>",
            of_kind.len(),
            of_kind.len().min(MISSES_SHOWN)
        );
        for m in of_kind.iter().take(MISSES_SHOWN) {
            let context = escape(&m.context).replacen('[', "<mark>", 1).replacen(']', "</mark>", 1);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{context}</td></tr>",
                escape(&m.record),
                escape(&m.entity),
                escape(&m.gold.join(" | ")),
                escape(&m.predicted.join(" | ")),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<p>Every miss is in <code>eval/misses.jsonl</code>.</p></section>");

    // audit
    h.push_str("<section id=\"audit\"><h2>Audit trail</h2><table>");
    if let Ok(Some(m)) = DataManifest::of(config) {
        for p in &m.plugins {
            let _ = write!(
                h,
                "<tr><th>plugin</th><td>{} <small>{} sha256 {}</small></td></tr>",
                escape(&p.id),
                escape(&p.kind),
                escape(&p.sha256)
            );
        }
        for i in &m.inputs {
            let _ = write!(
                h,
                "<tr><th>input</th><td>{} <small>sha256 {}</small></td></tr>",
                escape(&i.path.display().to_string()),
                escape(&i.sha256)
            );
        }
    }
    for p in &eval.metric_plugins {
        let _ = write!(h, "<tr><th>metric plugin</th><td>{} <small>sha256 {}</small></td></tr>", escape(&p.id), escape(&p.sha256));
    }
    h.push_str("</table></section></body></html>\n");
    let path = run.join("report.html");
    crate::atomic::write(&path, h.as_bytes())?;
    Ok(path)
}
