//! `runs/<name>/report.html`: one self-contained page (inline CSS and SVG, no script or file
//! from elsewhere) a person can read — the loss curve, accuracy and macro-F1 against the
//! baseline, per-class figures and the confusion matrix, rare-concept accuracy, examples of
//! what the normalizer and disambiguator found, and the audit trail.

mod annotate;

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::artifacts::{self, EvalScores, RunManifest, ScoredQuestion};
use crate::config::Config;
use crate::data::{Record, read_jsonl};
use crate::train::plot::{escape, loss_chart};

/// Sections every report has, by element id.
pub const SECTIONS: [&str; 8] = ["summary", "loss", "scores", "per-class", "confusion", "rare", "examples", "audit"];

/// A figure: whole numbers without decimals, others to three; `–` when there is none.
pub(crate) fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| if x.fract() == 0.0 && x.abs() < 1e9 { format!("{x:.0}") } else { format!("{x:.3}") })
}

/// A count as a figure.
fn count(v: Option<usize>) -> String {
    num(v.map(|n| n as f64))
}

/// Writes the report of `config`'s run (an `annotate` task's from `annotate.rs`); returns
/// its path.
pub fn write(config: &Config) -> std::io::Result<PathBuf> {
    let run = config.run_dir();
    let manifest: Option<RunManifest> = artifacts::read_if_any(&run.join("manifest.json"));
    let eval: Option<EvalScores> = artifacts::read_if_any(&run.join("eval/scores.json"));
    if let Some(e) = eval.as_ref().filter(|e| e.is_annotation()) {
        return annotate::write(config, e);
    }
    let score = |name: &str| eval.as_ref().and_then(|e| e.score(name));
    let outcome = manifest.as_ref().map(|m| &m.outcome);
    let rows = crate::train::read_rows(&run.join("metrics.jsonl"));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>medtune run {name}</title><style>{CSS}</style></head><body><h1>medtune run <code>{name}</code></h1>",
        name = escape(&config.name)
    );

    // summary
    let _ = write!(h, "<section id=\"summary\"><h2>Summary</h2><table>");
    let line = |h: &mut String, k: &str, v: String| {
        let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", escape(k), v);
    };
    let model = manifest.as_ref().map_or_else(|| config.model.path.clone(), |m| m.model.path.display().to_string());
    line(&mut h, "model", escape(&model));
    line(&mut h, "device", escape(&outcome.map_or(config.model.device, |o| o.device).to_string()));
    line(&mut h, "training steps", format!("{} of {}", count(outcome.map(|o| o.steps)), count(outcome.map(|o| o.total_steps))));
    line(&mut h, "training examples", count(outcome.map(|o| o.examples)));
    line(&mut h, "tokens/s", num(outcome.map(|o| o.tokens_per_s)));
    let split = eval.as_ref().map_or_else(|| "–".to_owned(), |e| e.split.to_string());
    line(&mut h, "evaluated on", format!("{} questions of the {} split", count(eval.as_ref().map(|e| e.questions)), escape(&split)));
    let onnx = run.join("onnx/model.onnx");
    if let Ok(meta) = std::fs::metadata(&onnx) {
        line(&mut h, "ONNX export", format!("{} ({:.0} MB)", escape(&onnx.display().to_string()), meta.len() as f64 / 1e6));
    }
    line(&mut h, "accuracy", num(score("accuracy")));
    line(&mut h, "macro-F1", num(score("macro_f1")));
    h.push_str("</table></section>");

    // loss curve
    let loss: Vec<(usize, f64)> = rows.iter().map(|r| (r.step, r.loss)).collect();
    let acc: Vec<(usize, f64)> = rows.iter().filter_map(|r| r.eval_accuracy.map(|a| (r.step, a))).collect();
    let _ = write!(
        h,
        "<section id=\"loss\"><h2>Training loss</h2>{}<p>{} steps; dashed: dev accuracy where evaluated.</p></section>",
        loss_chart("training loss and dev accuracy", &loss, &acc),
        rows.len()
    );

    // scores against the baseline
    let bars: Vec<(String, f64, Option<f64>)> = ["accuracy", "macro_f1"]
        .iter()
        .map(|k| (k.replace('_', "-"), score(k).unwrap_or(0.0), eval.as_ref().and_then(|e| e.baseline.get(*k).copied())))
        .collect();
    let _ = write!(h, "<section id=\"scores\"><h2>Accuracy and macro-F1 against the baseline</h2>{}", bar_chart(&bars));
    let _ = write!(h, "<table><tr><th></th><th>this run</th><th>baseline</th></tr>");
    for (k, v, b) in &bars {
        let _ = write!(h, "<tr><th>{k}</th><td>{v:.3}</td><td>{}</td></tr>", b.map_or("–".into(), |b| format!("{b:.3}")));
    }
    h.push_str("</table><p>Baseline: the figures in the config's <code>[eval] baseline</code> (the Hugging Face transformers + peft fine-tune of the same model).</p></section>");

    // per-class
    let labels = eval.as_ref().map_or_else(crate::artifacts::pubmedqa_labels, |e| e.labels.clone());
    let _ = write!(
        h,
        "<section id=\"per-class\"><h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    );
    for l in &labels {
        let _ = write!(
            h,
            "<tr><th>{l}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            num(score(&format!("precision/{l}"))),
            num(score(&format!("recall/{l}"))),
            num(score(&format!("f1/{l}"))),
            num(score(&format!("support/{l}")))
        );
    }
    h.push_str("</table></section>");

    // confusion
    let _ = write!(h, "<section id=\"confusion\"><h2>Confusion matrix</h2><table><tr><th>true \\ predicted</th>");
    for p in &labels {
        let _ = write!(h, "<th>{p}</th>");
    }
    h.push_str("</tr>");
    for t in &labels {
        let _ = write!(h, "<tr><th>{t}</th>");
        for p in &labels {
            let _ = write!(h, "<td class=\"{}\">{}</td>", if t == p { "hit" } else { "" }, num(score(&format!("confusion/{t}/{p}"))));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></section>");

    // rare concepts
    let _ = write!(
        h,
        "<section id=\"rare\"><h2>Rare-concept accuracy</h2><p>Questions naming a concept that at most {} training record(s) mention: <b>{}</b> of them, accuracy <b>{}</b> (all questions: {}).</p></section>",
        config.eval.as_ref().map_or(1, |e| e.rare_max_count),
        num(score("rare_concept_count")),
        num(score("rare_concept_accuracy")),
        num(score("accuracy"))
    );

    // examples
    h.push_str("<section id=\"examples\"><h2>Examples: what the plugins found</h2>");
    let split = config.eval.as_ref().map_or(crate::data::Split::Test, |e| e.split);
    let records = read_jsonl(&config.work_dir().join(format!("data/processed/{split}.jsonl"))).map(|(r, _)| r).unwrap_or_default();
    let preds: Vec<ScoredQuestion> = std::fs::read_to_string(run.join("eval/predictions.jsonl"))
        .map(|s| s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default();
    let shown: Vec<&Record> = records.iter().filter(|r| !r.mentions.is_empty() && !r.expansions.is_empty()).take(4).collect();
    if shown.is_empty() {
        h.push_str("<p>No evaluated question has both concept mentions and abbreviation expansions (the chain has no normalizer or disambiguator).</p>");
    }
    for r in shown {
        let pred = preds.iter().find(|p| p.id == r.id);
        let _ = write!(h, "<article><h3>PMID {}</h3><p class=\"q\">{}</p>", escape(&r.id), highlight(&r.question, r));
        let mut seen = std::collections::HashSet::new();
        let concepts: Vec<String> = r
            .mentions
            .iter()
            .filter(|m| seen.insert(m.concept.id.clone()))
            .take(12)
            .map(|m| format!("{} <small>{}</small>", escape(&m.concept.preferred_name), escape(&m.concept.id)))
            .collect();
        let exps: Vec<String> = r
            .expansions
            .iter()
            .filter(|e| seen.insert(e.abbreviation.clone()))
            .map(|e| format!("<b>{}</b> → {} <small>{:.2}</small>", escape(&e.abbreviation), escape(&e.long_form), e.confidence))
            .collect();
        let _ = write!(h, "<p><b>Concepts:</b> {}</p><p><b>Abbreviations:</b> {}</p>", concepts.join(", "), exps.join(", "));
        if let Some(p) = pred {
            let _ = write!(
                h,
                "<p><b>Answer:</b> {} · <b>predicted:</b> {} ({})</p>",
                escape(&p.label),
                escape(&p.predicted),
                labels.iter().zip(&p.probabilities).map(|(l, v)| format!("{} {}", escape(l), num(Some(*v)))).collect::<Vec<_>>().join(", ")
            );
        }
        h.push_str("</article>");
    }
    h.push_str("</section>");

    // audit trail
    h.push_str("<section id=\"audit\"><h2>Audit trail</h2><table>");
    if let Some(m) = &manifest {
        line(
            &mut h,
            "config",
            format!("{} <small>sha256 {}</small>", escape(&m.config.path.display().to_string()), escape(&m.config.sha256)),
        );
        let train = &m.data.train;
        line(
            &mut h,
            "training data",
            format!(
                "{} <small>sha256 {}</small>",
                escape(&train.path.display().to_string()),
                escape(train.sha256.as_deref().unwrap_or(""))
            ),
        );
        for p in m.plugins.iter().flatten() {
            line(&mut h, "plugin", format!("{} <small>{} sha256 {}</small>", escape(&p.id), escape(&p.kind), escape(&p.sha256)));
        }
    }
    for p in eval.iter().flat_map(|e| &e.metric_plugins) {
        line(&mut h, "metric plugin", format!("{} <small>sha256 {}</small>", escape(&p.id), escape(&p.sha256)));
    }
    if let Some(m) = &manifest {
        line(&mut h, "seeds", format!("train {}, data {}", num(m.seeds.train.map(|s| s as f64)), num(Some(m.seeds.data as f64))));
        line(&mut h, "medtune", format!("{} <small>commit {}</small>", escape(&m.medtune.version), escape(&m.medtune.commit)));
        let crates: Vec<String> = m.crates.iter().map(|(k, v)| format!("{k} {v}")).collect();
        line(&mut h, "crates", escape(&crates.join(", ")));
    }
    let text = manifest.as_ref().map_or("", |m| m.config.text.as_str());
    let _ = write!(h, "</table><details><summary>config text</summary><pre>{}</pre></details></section>", escape(text));
    h.push_str("</body></html>\n");
    let path = run.join("report.html");
    crate::atomic::write(&path, h.as_bytes())?;
    Ok(path)
}

/// The question with the spans of its mentions and expansions marked.
fn highlight(question: &str, r: &Record) -> String {
    let chars: Vec<char> = question.chars().collect();
    let at = r.question_span().map_or(0, |s| s.start);
    let mut marks: Vec<(usize, usize, &str)> = r
        .mentions
        .iter()
        .map(|m| (m.span.start, m.span.end, "concept"))
        .chain(r.expansions.iter().map(|e| (e.span.start, e.span.end, "abbr")))
        .filter(|(s, e, _)| *s >= at && ((*e - at) as usize) <= chars.len())
        .map(|(s, e, c)| ((s - at) as usize, (e - at) as usize, c))
        .collect();
    marks.sort();
    let mut out = String::new();
    let mut at = 0;
    for (s, e, class) in marks {
        if s < at {
            continue;
        }
        out.push_str(&escape(&chars[at..s].iter().collect::<String>()));
        let _ = write!(out, "<mark class=\"{class}\">{}</mark>", escape(&chars[s..e].iter().collect::<String>()));
        at = e;
    }
    out.push_str(&escape(&chars[at..].iter().collect::<String>()));
    out
}

/// Horizontal bars: this run's value and the baseline's, per figure (0..1).
fn bar_chart(bars: &[(String, f64, Option<f64>)]) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 520 {}\" width=\"520\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"scores against the baseline\">",
        40 + bars.len() * 50,
        40 + bars.len() * 50
    );
    let _ = write!(
        s,
        "<rect x=\"110\" y=\"6\" width=\"10\" height=\"10\" fill=\"#1f77b4\"/><text x=\"124\" y=\"15\">this run</text><rect x=\"200\" y=\"6\" width=\"10\" height=\"10\" fill=\"#aaa\"/><text x=\"214\" y=\"15\">baseline</text>"
    );
    for (i, (name, v, b)) in bars.iter().enumerate() {
        let y = 30 + i * 50;
        let _ = write!(s, "<text x=\"0\" y=\"{}\">{}</text>", y + 18, escape(name));
        let _ = write!(
            s,
            "<rect x=\"110\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"#1f77b4\"/><text x=\"{:.1}\" y=\"{}\">{v:.3}</text>",
            v.clamp(0.0, 1.0) * 360.0,
            114.0 + v.clamp(0.0, 1.0) * 360.0,
            y + 12
        );
        if let Some(b) = b {
            let _ = write!(
                s,
                "<rect x=\"110\" y=\"{}\" width=\"{:.1}\" height=\"16\" fill=\"#aaa\"/><text x=\"{:.1}\" y=\"{}\">{b:.3}</text>",
                y + 20,
                b.clamp(0.0, 1.0) * 360.0,
                114.0 + b.clamp(0.0, 1.0) * 360.0,
                y + 32
            );
        }
    }
    s.push_str("</svg>");
    s
}

pub(crate) const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}\
td.hit{background:#e3f1e3}section{margin:2rem 0}mark.concept{background:#cde4ff}mark.abbr{background:#ffe6a8}\
article{border-left:3px solid #ccc;padding-left:1rem;margin:1rem 0}small{color:#666}pre{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}";
