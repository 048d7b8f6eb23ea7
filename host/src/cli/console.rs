//! What the pipeline shows on a terminal: progress bars while a stage runs (hidden when
//! stderr is not a terminal; then a line per training step), and each stage's summary when it
//! finishes.

use indicatif::{ProgressBar, ProgressStyle};

use medtune::artifacts::EvalScores;
use medtune::pipeline::{ExportOutcome, Progress, StageResult, Trained};
use medtune::train::StepRow;

/// The terminal side of a pipeline run.
#[derive(Default)]
pub struct Console {
    bar: Option<ProgressBar>,
    /// Inside `medtune run`: a data stage with errors says that the run goes on.
    in_run: bool,
}

impl Console {
    /// The console of `medtune run`.
    pub fn for_run() -> Self {
        Console { bar: None, in_run: true }
    }

    fn bar(&mut self, make: impl FnOnce() -> ProgressBar) -> &ProgressBar {
        self.bar.get_or_insert_with(make)
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

impl Progress for Console {
    fn data_batch(&mut self, done: usize, swaps: &[String]) {
        let bar = self.bar(|| styled(ProgressBar::new_spinner(), "data  {spinner} {pos} records through the plugin chain  {elapsed}"));
        for line in swaps {
            bar.suspend(|| tracing::warn!("{line}"));
        }
        bar.set_position(done as u64);
    }

    fn train_step(&mut self, row: &StepRow, total: usize) {
        let bar = self.bar(|| styled(ProgressBar::new(0), "train {bar:30} {pos}/{len} steps  {msg}  eta {eta}"));
        bar.set_length(total as u64);
        bar.set_position(row.step as u64);
        bar.set_message(format!("loss {:.4}  {:.0} tokens/s", row.loss, row.tokens_per_s));
        if bar.is_hidden() {
            eprintln!(
                "step {}/{total}: loss {:.4}, lr {:.2e}, {:.0} tokens/s, {:.0} MiB",
                row.step, row.loss, row.lr, row.tokens_per_s, row.memory_mib
            );
        }
    }

    fn eval_progress(&mut self, done: usize, total: usize) {
        let bar = self.bar(|| styled(ProgressBar::new(0), "eval  {bar:30} {pos}/{len} questions  eta {eta}"));
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }

    fn finished(&mut self, result: StageResult<'_>) {
        self.clear();
        match result {
            StageResult::Vocab(r, dir, secs) => {
                print_vocab(r, dir, secs);
            }
            StageResult::Data(report, secs) => {
                print_data(report, secs);
                if self.in_run && report.has_errors() {
                    eprintln!("the data stage reported errors (above); the records that went through go on");
                }
            }
            StageResult::Train(trained) => print_trained(trained),
            StageResult::Eval(scores) => print_scores(scores),
            StageResult::Export(e) => print_export(e),
        }
    }
}

/// The vocabulary built, and what a training corpus taught it.
fn print_vocab(r: &medtune::vocab::VocabReport, dir: &std::path::Path, secs: f64) {
    println!(
        "vocabulary {}: {} concepts ({} synonyms), {} supplementary concepts, {} HPO terms, {} abbreviations ({} with several senses) in {secs:.1} s",
        dir.display(),
        r.concepts,
        r.synonyms,
        r.supplementary,
        r.hpo_terms,
        r.abbreviations,
        r.ambiguous,
    );
    if let Some(c) = &r.corpus {
        println!(
            "  from {} annotated documents ({} gold mentions): {} names of {} concepts (corpus.tsv), {} stop forms (stop.tsv), {} word rewrites (rewrites.tsv)",
            c.documents, c.mentions, c.names, c.concepts, c.stop, c.rewrites
        );
        for e in &c.errors {
            eprintln!("error: {e}");
        }
    }
}

/// The data stage's summary, and its errors on stderr.
fn print_data(report: &medtune::data::DataReport, secs: f64) {
    println!("data stage: {} records in {secs:.2} s ({:.0} records/s)", report.records, report.records as f64 / secs.max(1e-9));
    for p in &report.plugins {
        println!("  plugin {p}");
    }
    for (id, t) in &report.chain.plugin_time {
        println!("  {id}: {:.1} ms in plugin calls", t.as_secs_f64() * 1e3);
    }
    for (split, n) in &report.splits {
        println!("  {split}: {n} records");
    }
    for (id, n, t) in &report.augmented.per_plugin {
        println!("  {id}: {n} new training records ({:.1} ms in plugin calls)", t.as_secs_f64() * 1e3);
    }
    for path in &report.outputs {
        println!("  wrote {}", path.display());
    }
    if !report.has_errors() {
        return;
    }
    for e in &report.input_errors {
        eprintln!("error: {e}");
    }
    for f in report.chain.failures.iter().chain(&report.augmented.failures) {
        eprintln!("error: {f}");
    }
    eprintln!(
        "{} input error(s), {} record(s) failed in plugins{}; failed records are kept in the output, marked",
        report.input_errors.len(),
        report.chain.failed_records,
        if report.chain.stopped { "; stopped early (on_error = \"stop\")" } else { "" }
    );
}

/// A training run's summary.
fn print_trained(trained: &Trained) {
    let Trained::Run { outcome, run_dir, manifest, config } = trained else { return };
    for s in &outcome.skipped {
        eprintln!("skipped: {s}");
    }
    println!(
        "train: {}/{} steps{} on {} examples{}, last loss {:.4}, {:.0} tokens/s, peak {:.0} MiB",
        outcome.steps,
        outcome.total_steps,
        outcome.resumed_from.map(|s| format!(" (resumed at {s})")).unwrap_or_default(),
        outcome.examples,
        outcome.packed_rows.map(|r| format!(" packed into {r} rows")).unwrap_or_default(),
        outcome.last_loss,
        outcome.tokens_per_s,
        outcome.memory_mib
    );
    match &outcome.adapter {
        Some(a) => println!("  adapter {}", a.display()),
        None => println!("  stopped at step {}: continue with `medtune train --config {} --resume`", outcome.steps, config.display()),
    }
    println!("  wrote {}, {}, {}", run_dir.join("metrics.jsonl").display(), run_dir.join("loss.svg").display(), manifest.display());
}

/// An evaluation's headline figures, per-class table and confusion matrix.
pub fn print_scores(r: &EvalScores) {
    let f = |k: &str| r.score(k).map_or("-".into(), |v| format!("{v:.3}"));
    if r.is_annotation() {
        return print_annotation_scores(r);
    }
    if r.labels.is_empty() {
        println!("eval on {} ({} answers written, {:.1} s)", r.split, r.questions, r.seconds);
    } else {
        println!(
            "eval on {} ({} questions, {:.1} s): accuracy {}, macro-F1 {}",
            r.split,
            r.questions,
            r.seconds,
            f("accuracy"),
            f("macro_f1")
        );
    }
    if r.score("rare_concept_accuracy").is_some() {
        println!("  rare-concept accuracy {} ({} questions)", f("rare_concept_accuracy"), f("rare_concept_count"));
    }
    if r.labels.is_empty() {
        // a generate task: the text metrics, the perplexity and, for explained answers, the decisions
        let named: Vec<String> = ["exact_match", "token_f1", "rouge_l", "perplexity", "decision_accuracy"]
            .iter()
            .filter(|k| r.score(k).is_some())
            .map(|k| format!("{k} {}", f(k)))
            .collect();
        println!("  {}", named.join(", "));
        return;
    }
    let width = r.labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(8);
    println!("  {:<width$} {:>9} {:>7} {:>7} {:>8}", "class", "precision", "recall", "F1", "support");
    for l in &r.labels {
        println!(
            "  {l:<width$} {:>9} {:>7} {:>7} {:>8}",
            f(&format!("precision/{l}")),
            f(&format!("recall/{l}")),
            f(&format!("f1/{l}")),
            f(&format!("support/{l}"))
        );
    }
    println!("  confusion (rows true, columns predicted: {})", r.labels.join(" "));
    for t in &r.labels {
        let row: Vec<String> = r.labels.iter().map(|p| format!("{:>5}", r.score(&format!("confusion/{t}/{p}")).unwrap_or(0.0))).collect();
        println!("  {t:<width$}{}", row.join(""));
    }
}

/// An `annotate` task's scores: one row for every type together, one per entity type (a
/// type's precision and F only where every found concept had a type).
fn print_annotation_scores(r: &EvalScores) {
    let f = |k: String| r.score(&k).map_or("-".into(), |v| format!("{v:.3}"));
    println!("eval on {} ({} documents, {:.1} s)", r.split, r.questions, r.seconds);
    let types: Vec<&str> = r.scores.keys().filter_map(|k| k.strip_prefix("link/count/")).filter(|t| !t.contains('/')).collect();
    let width = types.iter().map(|t| t.chars().count()).max().unwrap_or(0).max(8);
    println!(
        "  {:<width$} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8} {:>10} {:>8}",
        "type", "mentions", "link acc", "doc P", "doc R", "doc F", "exact F", "overlap F", "concepts"
    );
    for t in std::iter::once("").chain(types.iter().copied()) {
        let s = if t.is_empty() { String::new() } else { format!("/{t}") };
        let (p, rec, f1) = (format!("document/precision{s}"), format!("document/recall{s}"), format!("document/f1{s}"));
        println!(
            "  {:<width$} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8} {:>10} {:>8}",
            if t.is_empty() { "all" } else { t },
            r.score(&format!("link/count{s}")).map_or("-".into(), |v| format!("{v}")),
            f(format!("link/accuracy{s}")),
            f(p),
            f(rec),
            f(f1),
            f(format!("mention-exact/f1{s}")),
            f(format!("mention-overlap/f1{s}")),
            r.score(&format!("document/support{s}")).map_or("-".into(), |v| format!("{v}")),
        );
    }
}

/// The export's summary and its check on ONNX Runtime.
fn print_export(e: &ExportOutcome) {
    println!(
        "exported {} layers{} to {} ({:.1} MB, {:.1} s)",
        e.layers,
        e.adapter.as_ref().map(|a| format!(" with adapter {}", a.display())).unwrap_or_default(),
        e.path.display(),
        e.bytes as f64 / 1e6,
        e.seconds
    );
    let (a, b) = (&e.check.candle, &e.check.ort);
    println!(
        "  checked on ONNX Runtime: yes/no/maybe {:.4}/{:.4}/{:.4} (candle {:.4}/{:.4}/{:.4}), max difference {:.1e}",
        b[0], b[1], b[2], a[0], a[1], a[2], e.check.max_difference
    );
}
