//! What an annotated training corpus teaches the vocabulary (as DNorm learns its lexicon from
//! its training set): `corpus.tsv`, each gold mention's text as a name of the concept it is
//! most often linked to, and `stop.tsv`, the text forms (and the concepts, as `id:` and the
//! id) the vocabulary's names match in the corpus but its annotators (almost) never marked,
//! which the normalizer then leaves alone. A branch of the MeSH tree so left alone
//! (`tree:D08`: enzymes and coenzymes) stops every descriptor of it that the corpus never
//! marked, seen in it or not (`id:` lines naming the branch); so is every descriptor newer
//! than the corpus (a number above the highest its annotators used: MeSH of their year had
//! no such heading, so they linked its concept otherwise). `rewrites.tsv`: the words its
//! mentions use where their concept's name has another ("renal" for "kidney").

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use medtext::{ConceptRow, Matcher, Options, normalize_name};

use super::table::Concept;
use crate::data::{InputSpec, Layout, Record};

/// A form is stopped when the vocabulary matched it at least this often in the corpus...
pub const STOP_MIN_HITS: usize = 2;
/// ...and the annotators marked at most this share of those matches.
pub const STOP_MAX_MARKED: f64 = 0.25;
/// The depths of the MeSH tree's branches counted: from a category (`D08`, enzymes and
/// coenzymes) to four parts (`D08.811.682.690`, superoxide dismutases); chosen on BC5CDR's
/// development set (chemical document F 0.854 with three and four parts, 0.866 from two,
/// 0.867 from one).
pub const STOP_BRANCH_DEPTHS: std::ops::RangeInclusive<usize> = 1..=4;
/// Descriptors newer than the corpus are stopped only when its gold mentions link descriptors
/// this many times (fewer say little about the MeSH edition it was annotated with).
pub const NEWER_MIN_MENTIONS: usize = 1000;
/// A word rewrite is kept when this many mentions teach it.
pub const REWRITE_MIN_TIMES: usize = 2;

/// The branches of a tree number ([`STOP_BRANCH_DEPTHS`] deep, where it is that deep).
fn branches_of(tree: &str) -> impl Iterator<Item = String> + '_ {
    let parts: Vec<&str> = tree.split('.').collect();
    let deepest = parts.len();
    STOP_BRANCH_DEPTHS.filter(move |&d| d <= deepest).map(move |d| parts[..d].join("."))
}

/// What was learned.
#[derive(Debug, Default)]
pub struct Learned {
    /// The names the corpus gives its concepts, one row each (`corpus.tsv`).
    pub concepts: Vec<Concept>,
    /// Stopped forms, `id:` concepts and `tree:` branches with (times matched, times marked),
    /// sorted, then the `id:` lines of the stopped branches' descriptors, each with its branch
    /// (`stop.tsv`).
    pub stop: Vec<Stop>,
    /// Word rewrites (from, to, times), the most often learned first (`rewrites.tsv`).
    pub rewrites: Vec<(String, String, usize)>,
    /// Documents read.
    pub documents: usize,
    /// Gold mentions read.
    pub mentions: usize,
    /// Records of the corpus that could not be read.
    pub errors: Vec<String>,
}

/// One line of `stop.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    /// A normalized form, `id:ID` or `tree:BRANCH`.
    pub key: String,
    /// Times the vocabulary matched it in the corpus.
    pub hits: usize,
    /// Times the annotators marked those matches.
    pub marked: usize,
    /// Why a descriptor that is not a form of its own is stopped.
    pub why: Option<Why>,
}

/// Why a descriptor is stopped beyond its own matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Each of its tree numbers lies in these stopped branches (`D26|D27.1`).
    Branch(String),
    /// Its number is above the highest descriptor the corpus links (this one).
    Newer(String),
}

/// Reads the annotated corpora `paths` (PubTator, BioC XML, JSON) and learns from their gold
/// mentions; `tables` are the vocabulary's concept rows the stop forms are found with (only
/// concepts of the corpus's entity types, by group name, are matched), `trees` the MeSH tree
/// numbers of its descriptors (empty: no branch stopped).
pub fn learn(paths: &[impl AsRef<Path>], tables: &[ConceptRow], trees: &HashMap<String, Vec<String>>) -> Learned {
    let mut learned = Learned::default();
    let mut spec = InputSpec::detected();
    spec.layout = Some(Layout::Annotated);
    spec.task = crate::config::TaskKind::Annotate;
    let mut records: Vec<Record> = Vec::new();
    for path in paths {
        let input = crate::data::read(path.as_ref(), &spec);
        learned.errors.extend(input.errors.iter().map(ToString::to_string));
        records.extend(input.records);
    }
    learned.documents = records.len();
    // form -> id -> written form -> times; id -> type -> times
    let mut forms: BTreeMap<String, BTreeMap<String, BTreeMap<String, usize>>> = BTreeMap::new();
    let mut types: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
    for g in records.iter().flat_map(|r| &r.gold) {
        learned.mentions += 1;
        // a composite mention names several concepts at once: a name of them all together
        // (the id `D006470+D003556`), of no one of them
        if g.ids.is_empty() {
            continue;
        }
        let id = &g.ids.join("+");
        let form = normalize_name(&g.text);
        if form.is_empty() {
            continue;
        }
        *forms.entry(form).or_default().entry(id.clone()).or_default().entry(g.text.trim().to_owned()).or_default() += 1;
        *types.entry(id.clone()).or_default().entry(g.kind.to_lowercase()).or_default() += 1;
    }
    // each form goes to the concept it is most often linked to (ties: the smaller id), written
    // as it is written most often, ties in fewer capitals: "Na" (sodium), not its "na", and
    // "alcohol", not a title's "ALCOHOL" (the matcher takes short names and acronyms only as
    // written)
    let caps = |t: &str| t.chars().filter(char::is_ascii_uppercase).count();
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ids in forms.values() {
        let total = |w: &BTreeMap<String, usize>| w.values().sum::<usize>();
        if let Some((id, written)) = ids.iter().max_by(|a, b| total(a.1).cmp(&total(b.1)).then_with(|| b.0.cmp(a.0)))
            && let Some((w, _)) = written.iter().max_by(|a, b| a.1.cmp(b.1).then_with(|| caps(b.0).cmp(&caps(a.0))))
        {
            names.entry(id.clone()).or_default().push(w.clone());
        }
    }
    // one row per name, each its row's preferred name: the matcher takes preferred names
    // before synonyms, so a name the corpus links wins over the same words in a later table
    learned.concepts = names
        .into_iter()
        .flat_map(|(id, written)| {
            let group: Vec<String> =
                types.get(&id).and_then(|t| t.iter().max_by_key(|(_, n)| **n)).map(|(g, _)| g.clone()).into_iter().collect();
            written.into_iter().map(move |name| Concept { id: id.clone(), name, synonyms: Vec::new(), groups: group.clone() })
        })
        .collect();
    learned.stop = stop_forms(&records, tables, &learned.concepts, trees);
    learned.rewrites = rewrites(&records, tables);
    learned
}

/// The one-word rewrites that turn a gold mention of two words or more that is no name of the
/// vocabulary into a name of the concept it is linked to, word for word in order ("pulmonary
/// toxicity" of Lung Diseases, named "pulmonary disease": toxicity to disease), each taught by
/// at least [`REWRITE_MIN_TIMES`] mentions. Inverted names ("Diseases, Kidney") are not compared.
fn rewrites(records: &[Record], tables: &[ConceptRow]) -> Vec<(String, String, usize)> {
    let golds: Vec<(String, &str)> = records
        .iter()
        .flat_map(|r| &r.gold)
        .filter_map(|g| match g.ids.as_slice() {
            [id] => Some((normalize_name(&g.text), id.as_str())),
            _ => None,
        })
        .filter(|(form, _)| form.contains(' '))
        .collect();
    let wanted: std::collections::HashSet<&str> = golds.iter().map(|g| g.1).collect();
    let mut all_names: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut names_of: HashMap<&str, Vec<String>> = HashMap::new();
    for row in tables {
        for name in std::iter::once(&row.preferred).chain(&row.synonyms).filter(|n| !n.contains(',')) {
            let norm = normalize_name(name);
            if wanted.contains(row.id.as_str()) {
                names_of.entry(row.id.as_str()).or_default().push(norm.clone());
            }
            all_names.insert(norm);
        }
    }
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (form, id) in golds.iter().filter(|(form, _)| !all_names.contains(form)) {
        let words: Vec<&str> = form.split(' ').collect();
        let mut taught: std::collections::BTreeSet<(&str, &str)> = std::collections::BTreeSet::new();
        for name in names_of.get(id).into_iter().flatten() {
            let other: Vec<&str> = name.split(' ').collect();
            if other.len() != words.len() {
                continue;
            }
            let mut diff = words.iter().zip(&other).filter(|(a, b)| a != b);
            if let (Some((a, b)), None) = (diff.next(), diff.next()) {
                taught.insert((a, b));
            }
        }
        for (a, b) in taught {
            *counts.entry((a.to_owned(), b.to_owned())).or_default() += 1;
        }
    }
    let mut out: Vec<(String, String, usize)> =
        counts.into_iter().filter(|(_, n)| *n >= REWRITE_MIN_TIMES).map(|((a, b), n)| (a, b, n)).collect();
    out.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
    out
}

/// `rewrites.tsv`.
pub fn rewrites_tsv(rewrites: &[(String, String, usize)], header: &str) -> String {
    let mut out =
        format!("# {header}\n# word in the corpus's mentions (normalized)\tthe word of the linked concept's name\tmentions teaching it\n");
    for (a, b, n) in rewrites {
        out.push_str(&format!("{a}\t{b}\t{n}\n"));
    }
    out
}

/// The forms matched at least [`STOP_MIN_HITS`] times and marked at most
/// [`STOP_MAX_MARKED`] of them: a match counts as marked when a gold mention covers it.
fn stop_forms(records: &[Record], tables: &[ConceptRow], learned: &[Concept], trees: &HashMap<String, Vec<String>>) -> Vec<Stop> {
    let kinds: std::collections::BTreeSet<String> = records.iter().flat_map(|r| r.gold.iter().map(|g| g.kind.to_lowercase())).collect();
    let corpus_rows = learned.iter().map(|c| ConceptRow {
        id: c.id.clone(),
        preferred: c.name.clone(),
        synonyms: c.synonyms.clone(),
        groups: c.groups.clone(),
    });
    let rows: Vec<ConceptRow> = corpus_rows.chain(tables.iter().filter(|r| r.groups.iter().any(|g| kinds.contains(g))).cloned()).collect();
    // short names too (`Hg` of "mm Hg"), in case a config matches them
    let matcher = Matcher::new(&rows, Options { short_names: true, ..Options::default() });
    // by form, and by concept (`id:` and its id: every form of a concept the annotators
    // leave alone)
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in records {
        for f in &r.fields {
            let text = crate::data::slice(&r.text, f.span);
            for m in matcher.find(&text) {
                let (a, b) = (f.span.start + m.char_start, f.span.start + m.char_end);
                // marked: a gold mention covers it (one inside it, "creatine" of "creatine kinase",
                // marks only the name inside, which the normalizer finds once this one stops)
                let marked = usize::from(r.gold.iter().any(|g| g.span.start <= a && b <= g.span.end));
                let id = matcher.concept(m.concept).0;
                let branches: std::collections::BTreeSet<String> =
                    trees.get(id).into_iter().flatten().flat_map(|t| branches_of(t)).map(|b| format!("tree:{b}")).collect();
                for key in [normalize_name(&text[m.start..m.end]), format!("id:{id}")].into_iter().chain(branches) {
                    let e = counts.entry(key).or_default();
                    (e.0, e.1) = (e.0 + 1, e.1 + marked);
                }
            }
        }
    }
    let stopped = |(hits, marked): (usize, usize)| hits >= STOP_MIN_HITS && (marked as f64) <= STOP_MAX_MARKED * hits as f64;
    let mut out: Vec<Stop> = counts
        .iter()
        .filter(|(_, c)| stopped(**c))
        .map(|(key, &(hits, marked))| Stop { key: key.clone(), hits, marked, why: None })
        .collect();
    // a descriptor each of whose tree numbers lies in a stopped branch, that the corpus never
    // marked (no name of it learned, none of its matches marked), is stopped with its branches
    let named: std::collections::HashSet<&str> = learned.iter().map(|c| c.id.as_str()).collect();
    let kept: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let mut by_branch: Vec<Stop> = Vec::new();
    for (id, numbers) in trees.iter().filter(|(id, t)| !t.is_empty() && kept.contains(id.as_str()) && !named.contains(id.as_str())) {
        let own = counts.get(&format!("id:{id}")).copied().unwrap_or_default();
        if own.1 > 0 || stopped(own) {
            continue;
        }
        let stopped_branch = |tree: &String| branches_of(tree).find(|b| counts.get(&format!("tree:{b}")).is_some_and(|c| stopped(*c)));
        let Some(why) = numbers.iter().map(stopped_branch).collect::<Option<std::collections::BTreeSet<String>>>() else { continue };
        by_branch.push(Stop {
            key: format!("id:{id}"),
            hits: own.0,
            marked: own.1,
            why: Some(Why::Branch(why.into_iter().collect::<Vec<_>>().join("|"))),
        });
    }
    by_branch.sort_by(|a, b| a.key.cmp(&b.key));
    out.extend(by_branch);
    out.extend(newer_than_the_corpus(records, &rows, &named, &out, &counts));
    out
}

/// A descriptor's number (`D000077208`: 77208); none for other ids.
fn descriptor_number(id: &str) -> Option<u64> {
    id.strip_prefix('D').filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
}

/// The descriptors of `rows` numbered above the highest descriptor the corpus's gold mentions
/// link (MeSH numbers its descriptors in the order they are created), that the corpus never
/// names and `stopped` does not hold yet, when at least [`NEWER_MIN_MENTIONS`] mentions link
/// descriptors: the annotators' MeSH had none of them.
fn newer_than_the_corpus(
    records: &[Record],
    rows: &[ConceptRow],
    named: &std::collections::HashSet<&str>,
    stopped: &[Stop],
    counts: &BTreeMap<String, (usize, usize)>,
) -> Vec<Stop> {
    let linked: Vec<(u64, &str)> =
        records.iter().flat_map(|r| &r.gold).flat_map(|g| &g.ids).filter_map(|id| Some((descriptor_number(id)?, id.as_str()))).collect();
    let Some(&(newest, newest_id)) = linked.iter().max() else { return Vec::new() };
    if linked.len() < NEWER_MIN_MENTIONS {
        return Vec::new();
    }
    let already: std::collections::HashSet<&str> = stopped.iter().map(|s| s.key.as_str()).collect();
    rows.iter()
        .filter(|r| descriptor_number(&r.id).is_some_and(|n| n > newest) && !named.contains(r.id.as_str()))
        .map(|r| format!("id:{}", r.id))
        .filter(|key| !already.contains(key.as_str()))
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .map(|key| {
            let (hits, marked) = counts.get(&key).copied().unwrap_or_default();
            Stop { key, hits, marked, why: Some(Why::Newer(newest_id.to_owned())) }
        })
        .collect()
}

/// `stop.tsv`.
pub fn stop_tsv(stop: &[Stop], header: &str) -> String {
    let mut out = format!(
        "# {header}\n# form (normalized), id:ID or tree:BRANCH\ttimes matched\ttimes marked by the annotators\twhy an id: line is stopped beyond its matches (tree:BRANCH: with that stopped branch; newer:ID: numbered above ID, the corpus's newest descriptor)\n"
    );
    for s in stop {
        out.push_str(&format!("{}\t{}\t{}", s.key, s.hits, s.marked));
        match &s.why {
            Some(Why::Branch(b)) => out.push_str(&format!("\ttree:{b}")),
            Some(Why::Newer(id)) => out.push_str(&format!("\tnewer:{id}")),
            None => {}
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each form goes to its most frequent id; a form the vocabulary matches but the
    /// annotators never marked is stopped; a composite mention is a name of its concepts
    /// together.
    #[test]
    fn gold_mentions_become_names_and_unmarked_matches_stop_forms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.pubtator");
        std::fs::write(
            &path,
            "1|t|Drug toxicity.\n1|a|The drug caused toxicity and breast and ovarian cancer.\n\
             1\t5\t13\ttoxicity\tDisease\tD064420\n1\t31\t39\ttoxicity\tDisease\tD064420\n\
             1\t44\t69\tbreast and ovarian cancer\tDisease\tD001943|D010051\n\n\
             2|t|Toxicity of drugs.\n2\t0\t8\tToxicity\tDisease\tD000001\n",
        )
        .expect("write");
        let tables =
            medtext::parse_concepts("D004364\tPharmaceutical Preparations\tDrug|Drugs\tchemical\nD002\tNeoplasms\tCancer\tdisease\n")
                .expect("tables");
        let learned = learn(&[&path], &tables, &HashMap::new());
        assert_eq!((learned.documents, learned.mentions), (2, 4));
        let names: Vec<(&str, &str)> = learned.concepts.iter().map(|c| (c.id.as_str(), c.name.as_str())).collect();
        assert_eq!(names, [("D001943+D010051", "breast and ovarian cancer"), ("D064420", "toxicity")]);
        assert_eq!(learned.concepts[1].groups, ["disease"]);
        // "drug" is a chemical name, and Chemical is no type of this corpus: not matched at all
        assert!(learned.stop.iter().all(|s| s.key != "drug"), "{:?}", learned.stop);
        let tables = medtext::parse_concepts(
            "D004364\tPharmaceutical Preparations\tDrug|Drugs\tdisease\nD005\tPharmaceutical Products\t\tdisease\nD006\tToxic Drugs\tToxic Drug\tdisease\n",
        )
        .expect("tables");
        // D004364 and D005 share a branch that is never marked: D005, never seen, stops with it;
        // D006 has another branch too
        let trees: HashMap<String, Vec<String>> = [("D004364", "D26.1.2"), ("D005", "D26.1.2.9"), ("D006", "D26.1.5|D27.1.6")]
            .iter()
            .map(|(id, b)| (id.to_string(), b.split('|').map(str::to_owned).collect()))
            .collect();
        let learned = learn(&[&path], &tables, &trees);
        let stop: Vec<(&str, usize, usize, Option<Why>)> =
            learned.stop.iter().map(|s| (s.key.as_str(), s.hits, s.marked, s.why.clone())).collect();
        assert_eq!(
            stop,
            [
                ("drug", 3, 0, None),
                ("id:D004364", 3, 0, None),
                ("tree:D26", 3, 0, None),
                ("tree:D26.1", 3, 0, None),
                ("tree:D26.1.2", 3, 0, None),
                ("id:D005", 0, 0, Some(Why::Branch("D26".into())))
            ]
        );
        assert!(stop_tsv(&learned.stop, "h").ends_with("id:D005\t0\t0\ttree:D26\n"));
    }

    /// Descriptors numbered above the corpus's newest are stopped, with that one named, once
    /// enough mentions link descriptors; older ones and supplementary records are not.
    #[test]
    fn descriptors_newer_than_the_corpus_are_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let corpus = |n: usize| {
            let path = dir.path().join(format!("c{n}.pubtator"));
            let abstract_ = "toxicity ".repeat(n);
            let mut text = format!("7|t|T\n7|a|{abstract_}\n");
            for i in 0..n {
                let at = 2 + 9 * i;
                text.push_str(&format!("7\t{at}\t{}\ttoxicity\tDisease\tD000100\n", at + 8));
            }
            std::fs::write(&path, text).expect("write");
            path
        };
        let tables = medtext::parse_concepts(
            "D000050\tOld Heading\t\tdisease\nD000100\tToxicity\t\tdisease\nD000200\tNew Heading\t\tdisease\nC000300\tA Record\t\tdisease\n",
        )
        .expect("tables");
        let learned = learn(&[corpus(NEWER_MIN_MENTIONS)], &tables, &HashMap::new());
        assert_eq!(learned.mentions, NEWER_MIN_MENTIONS);
        let newer: Vec<(&str, Option<Why>)> =
            learned.stop.iter().filter(|s| s.why.is_some()).map(|s| (s.key.as_str(), s.why.clone())).collect();
        assert_eq!(newer, [("id:D000200", Some(Why::Newer("D000100".into())))]);
        assert!(stop_tsv(&learned.stop, "h").ends_with("id:D000200\t0\t0\tnewer:D000100\n"));
        let few = learn(&[corpus(NEWER_MIN_MENTIONS - 1)], &tables, &HashMap::new());
        assert!(few.stop.iter().all(|s| s.why.is_none()), "too few mentions to tell the corpus's MeSH: {:?}", few.stop);
    }

    /// A mention that becomes a name of its concept with one word replaced teaches that
    /// rewrite, kept when two mentions teach it; mentions that are names teach nothing.
    #[test]
    fn word_rewrites_are_learned_from_mentions_no_name_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.pubtator");
        std::fs::write(
            &path,
            "5|t|Pulmonary toxicity and renal toxicity.\n\
             5\t0\t18\tPulmonary toxicity\tDisease\tD008171\n5\t23\t37\trenal toxicity\tDisease\tD007674\n\n\
             6|t|Renal toxicities, renal failure and lung disease.\n\
             6\t0\t16\tRenal toxicities\tDisease\tD007674\n6\t18\t31\trenal failure\tDisease\tD051437\n\
             6\t36\t48\tlung disease\tDisease\tD008171\n",
        )
        .expect("write");
        let tables = medtext::parse_concepts(
            "D008171\tLung Diseases\tPulmonary Disease|Diseases, Lung\tdisease\n\
             D007674\tKidney Diseases\tRenal Disease\tdisease\nD051437\tRenal Insufficiency\tKidney Failure|Renal Failure\tdisease\n",
        )
        .expect("tables");
        let learned = learn(&[&path], &tables, &HashMap::new());
        assert!(learned.errors.is_empty(), "{:?}", learned.errors);
        // "renal failure" and "lung disease" are names; the three toxicities teach one rewrite
        assert_eq!(learned.rewrites, [("toxicity".to_owned(), "disease".to_owned(), 3)]);
        assert_eq!(
            rewrites_tsv(&learned.rewrites, "h").lines().last(),
            Some("toxicity\tdisease\t3"),
            "one line per rewrite: from, to, times"
        );
    }

    /// A name with a gold mention inside it ("creatine" of "creatine kinase") is not marked
    /// by it, so it stops; a name is learned as written most often, ties in fewer capitals.
    #[test]
    fn a_mention_inside_a_name_does_not_mark_it_and_names_are_learned_as_mostly_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.pubtator");
        std::fs::write(
            &path,
            "3|t|Creatine kinase and ALCOHOL.\n3|a|Creatine kinase rose with alcohol.\n\
             3\t0\t8\tCreatine\tChemical\tD003401\n3\t20\t27\tALCOHOL\tChemical\tD000431\n\
             3\t29\t37\tCreatine\tChemical\tD003401\n3\t55\t62\talcohol\tChemical\tD000431\n\n\
             4|t|Na and Na rose; na fell.\n4\t0\t2\tNa\tChemical\tD012964\n4\t7\t9\tNa\tChemical\tD012964\n\
             4\t16\t18\tna\tChemical\tD012964\n",
        )
        .expect("write");
        let tables = medtext::parse_concepts("D003402\tCreatine Kinase\t\tchemical\n").expect("tables");
        let learned = learn(&[&path], &tables, &HashMap::new());
        let names: Vec<(&str, &str)> = learned.concepts.iter().map(|c| (c.id.as_str(), c.name.as_str())).collect();
        assert_eq!(names, [("D000431", "alcohol"), ("D003401", "Creatine"), ("D012964", "Na")]);
        let stop: Vec<(&str, usize, usize)> = learned.stop.iter().map(|s| (s.key.as_str(), s.hits, s.marked)).collect();
        assert_eq!(stop, [("creatine kinase", 2, 0), ("id:D003402", 2, 0)]);
    }
}
