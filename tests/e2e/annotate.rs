//! Annotated corpora: PubTator files with gold mentions, one file per split, through the data
//! stage and the normalizer, and `medtune run` / `medtune eval` scoring the mentions against
//! the gold (per entity type, with the misses and their contexts, in the console and the
//! report); bad documents named while the good ones go on; tasks and layouts that do not fit
//! refused by name.

use crate::harness::{Env, read_json, read_jsonl};

/// Two documents for training (one with a broken mention line) and one for development.
const TRAIN: &str = "1|t|Lithium toxicity.\n1|a|Naloxone reversed hypertension.\n\
1\t0\t7\tLithium\tChemical\tD008094\n1\t8\t16\ttoxicity\tDisease\tD064420\n1\t18\t26\tNaloxone\tChemical\tD009270\n\
1\t36\t48\thypertension\tDisease\tD006973\n1\tCID\tD008094\tD064420\n\n\
2|t|Broken.\n2\tseven\t3\tBro\tDisease\tD1\n\n";
const DEV: &str = "3|t|Clonidine and high blood pressure.\n3|a|Clonidine lowered hypertension; no asthma.\n\
3\t0\t9\tClonidine\tChemical\tD003000\n3\t14\t33\thigh blood pressure\tDisease\tD006973\n\
3\t35\t44\tClonidine\tChemical\tD003000\n3\t53\t65\thypertension\tDisease\tD006973\n3\t70\t76\tasthma\tDisease\tD001249\n";
const VOCAB: &str = "# id\tpreferred name\tsynonyms\nD008094\tLithium\t\nD009270\tNaloxone\t\nD006973\tHypertension\tHigh Blood Pressure\n\
D003000\tClonidine\t\nD001241\tAspirin\t\nD007022\tHypotension\tLow Blood Pressure\n";

fn cdr_config(env: &Env, task: &str, extra: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(env.path("vocab")).expect("mkdir");
    env.write("vocab/concepts.tsv", VOCAB);
    env.write("cdr/train.pubtator", TRAIN);
    env.write("cdr/dev.PubTator.txt", DEV);
    env.write(
        "cdr.toml",
        format!(
            "name = \"cdr\"\nwork_dir = \"work\"\n\n[data]\ninput = \"cdr/train.pubtator\"\ndev_input = \"cdr/dev.PubTator.txt\"\nsplit = \"files\"\n\n\
             [task]\nkind = \"{task}\"\n\n[[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"normalizer\"\ngrants = {{ \"/vocab\" = \"vocab\" }}\n\n\
             [eval]\nsplit = \"dev\"\n{extra}"
        ),
    )
}

/// The dev document has five gold mentions of three concepts; the normalizer finds
/// Clonidine twice, "high blood pressure" and "hypertension" (D006973), and not asthma (not in
/// the vocabulary): linking 4 of 5, every found concept right (precision 1), 2 of 3 gold
/// concepts (recall 2/3). The broken training document is named; the other one goes through
/// with its gold mentions mapped onto the record's text.
#[test]
fn pubtator_gold_mentions_are_scored_per_type_with_misses() {
    let env = Env::new();
    let config = cdr_config(&env, "annotate", "");
    let c = config.to_str().expect("utf-8");
    env.run(&["run", c])
        .expect_code(2)
        .stderr_has("train.pubtator: line 9: line 10: the start offset \"seven\" is not a number")
        .stdout_has("eval on dev (1 documents")
        .stdout_has("Chemical")
        .stdout_has("Disease");
    let train = read_jsonl(&env.path("work/data/processed/train.jsonl"));
    assert_eq!(train.len(), 1);
    let text = train[0]["text"].as_str().expect("text");
    assert_eq!(text, "Lithium toxicity.\n\nNaloxone reversed hypertension.");
    let gold = train[0]["gold"].as_array().expect("gold");
    let at = |g: &serde_json::Value| -> String {
        let (a, b) = (g["span"]["start"].as_u64().unwrap_or(0) as usize, g["span"]["end"].as_u64().unwrap_or(0) as usize);
        text.chars().skip(a).take(b - a).collect()
    };
    assert_eq!(gold.iter().map(at).collect::<Vec<_>>(), ["Lithium", "toxicity", "Naloxone", "hypertension"]);
    assert_eq!(train[0]["relations"][0]["type"], "CID");

    let scores = read_json(env.path("work/runs/cdr/eval/scores.json"));
    let s = |k: &str| scores["scores"][k].as_f64().unwrap_or(f64::NAN);
    assert_eq!((s("link/accuracy"), s("link/accuracy/Chemical"), s("link/accuracy/Disease")), (0.8, 1.0, 2.0 / 3.0));
    assert_eq!((s("document/precision"), s("document/recall"), s("document/recall/Disease")), (1.0, 2.0 / 3.0, 0.5));
    assert_eq!(s("mention-exact/recall"), 0.8);
    // every concept found is a gold one, so each has a type and precision per type is known
    assert_eq!(s("document/precision/Disease"), 1.0);
    let misses = read_jsonl(&env.path("work/runs/cdr/eval/misses.jsonl"));
    let kinds: Vec<(&str, &str)> = misses.iter().map(|m| (m["kind"].as_str().unwrap_or(""), m["text"].as_str().unwrap_or(""))).collect();
    assert_eq!(kinds, [("link", "asthma"), ("missed", "asthma")]);
    assert!(misses[0]["context"].as_str().unwrap_or("").ends_with("no [asthma]."), "{}", misses[0]);

    // the report: the table per type and the misses in their context
    let report = std::fs::read_to_string(env.path("work/runs/cdr/report.html")).expect("report.html");
    for needle in ["id=\"per-type\"", "<td>Chemical</td>", "id=\"misses\"", "no <mark>asthma</mark>.", "annotation-metrics"] {
        assert!(report.contains(needle), "report lacks {needle}");
    }

    // eval alone again: the same scores; --base has no meaning here
    env.run(&["eval", "--config", c]).expect_code(0).stdout_has("eval on dev (1 documents");
    env.run(&["eval", "--config", c, "--base"]).expect_code(1).stderr_has("an `annotate` task scores the plugins' mentions");
}

/// An annotate task trains nothing, a choice task has no use for gold mentions, and an
/// annotate task needs annotated documents: each refused by name before any work.
#[test]
fn tasks_and_layouts_that_do_not_fit_annotated_documents_are_refused() {
    let env = Env::new();
    let config = cdr_config(&env, "annotate", "\n[train]\nmax_steps = 1\n");
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("train")
        .stderr_has("an `annotate` task trains no model");
    let config = cdr_config(&env, "choice", "");
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("train.pubtator: line 1: annotated documents are scored against their gold mentions (task.kind = \"annotate\")");
    let qa = env.write("qa.jsonl", crate::harness::jsonl(&[("q1", "Does lithium help?")]));
    let config =
        env.write("qa.toml", format!("name = \"qa\"\n[data]\ninput = {:?}\n[task]\nkind = \"annotate\"\n", qa.display().to_string()));
    env.run(&["data", "--config", config.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("qa records have no gold mentions; an `annotate` task reads annotated documents");
    let lone = env.write("lone.toml", "name = \"x\"\n[data]\ninput = \"cdr/train.pubtator\"\ndev_input = \"cdr/dev.PubTator.txt\"\n");
    env.run(&["data", "--config", lone.to_str().expect("utf-8")])
        .expect_code(1)
        .stderr_has("data.dev_input")
        .stderr_has("belongs to data.split = \"files\"");
}

/// Scores one annotated document with the normalizer over the table `vocab` and `settings`
/// (a TOML inline table's fields): `doc(1)` is the training split, `doc(2)` the development
/// split; the eval's `scores.json`.
fn scored(env: &Env, vocab: &str, doc: impl Fn(u32) -> String, settings: &str) -> serde_json::Value {
    std::fs::create_dir_all(env.path("vocab")).expect("mkdir");
    env.write("vocab/concepts.tsv", vocab);
    env.write("cdr/train.pubtator", doc(1));
    env.write("cdr/dev.pubtator", doc(2));
    let config = env.write(
        "one.toml",
        format!(
            "name = \"one\"\nwork_dir = \"work\"\n\n[data]\ninput = \"cdr/train.pubtator\"\ndev_input = \"cdr/dev.pubtator\"\nsplit = \"files\"\n\n\
             [task]\nkind = \"annotate\"\n\n[[plugins.chain]]\nname = \"terminology-normalizer\"\nkind = \"normalizer\"\n\
             grants = {{ \"/vocab\" = \"vocab\" }}\nsettings = {{ {settings} }}\n\n[eval]\nsplit = \"dev\"\n"
        ),
    );
    env.run(&["run", config.to_str().expect("utf-8")]).expect_code(0);
    read_json(env.path("work/runs/one/eval/scores.json"))
}

/// A gold mention no name matches word for word ("hypertensive") is linked to the concept of
/// the name nearest its whole text by character trigrams, among the concepts of its own type
/// (a chemical's "Hypertensin" is nearer); `link_min_score` above 1 turns that off.
#[test]
fn a_gold_mention_no_name_matches_is_linked_to_the_nearest_name_of_its_type() {
    let env = Env::new();
    let vocab = "D006973\tHypertension\t\tdisease\nC000001\tHypertensin\t\tchemical\nD003000\tClonidine\t\tchemical\n";
    let doc = |id: u32| {
        format!(
            "{id}|t|Clonidine in hypertensive rats.\n{id}\t0\t9\tClonidine\tChemical\tD003000\n{id}\t13\t25\thypertensive\tDisease\tD006973\n\n"
        )
    };
    for (extra, linked) in [("", 1.0), (", link_min_score = 2.0", 0.5)] {
        let scores = scored(&env, vocab, doc, &format!("types = \"disease,chemical\"{extra}"));
        let s = |k: &str| scores["scores"][k].as_f64().unwrap_or(f64::NAN);
        assert_eq!((s("link/accuracy"), s("link/accuracy/Disease")), (linked, 2.0 * linked - 1.0), "settings{extra}");
        // the document's own text is matched word for word only: no concept for "hypertensive"
        assert_eq!(s("document/recall/Disease"), 0.0, "settings{extra}");
    }
}

/// A gold mention that is an abbreviation its document defines ("OAB" after "overactive
/// bladder (OAB)") is linked as its long form: here by the long form's nearest name, as no
/// name matches "overactive bladder" word for word.
#[test]
fn a_defined_abbreviation_is_linked_as_its_long_form() {
    let env = Env::new();
    let vocab = "D053201\tUrinary Bladder, Overactive\t\tdisease\nD001743\tUrinary Bladder\t\tanatomy\n";
    let doc = |id: u32| {
        format!(
            "{id}|t|Drugs for overactive bladder (OAB).\n{id}|a|OAB is common.\n{id}\t30\t33\tOAB\tDisease\tD053201\n{id}\t36\t39\tOAB\tDisease\tD053201\n\n"
        )
    };
    let scores = scored(&env, vocab, doc, "types = \"disease\"");
    assert_eq!(scores["scores"]["link/accuracy/Disease"].as_f64(), Some(1.0), "{scores}");
}

/// A gold mention that is an abbreviation nothing defines and no name matches ("OAB") is its
/// one sense in the `senses` inventory ("overactive bladder"); one of several senses is none.
#[test]
fn an_undefined_abbreviation_is_its_one_sense() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("vocab")).expect("mkdir");
    env.write("vocab/abbreviations.tsv", "OAB\toveractive bladder\nMD\tmuscular dystrophy|midline defect\n");
    let vocab = "D053201\tOveractive Bladder\t\tdisease\nD009136\tMuscular Dystrophies\t\tdisease\n";
    let doc = |id: u32| format!("{id}|t|OAB and MD in women.\n{id}\t0\t3\tOAB\tDisease\tD053201\n{id}\t8\t10\tMD\tDisease\tD009136\n\n");
    for (settings, linked) in [("senses = \"/vocab/abbreviations.tsv\"", 0.5), ("", 0.0)] {
        let scores = scored(&env, vocab, doc, settings);
        assert_eq!(scores["scores"]["link/accuracy"].as_f64(), Some(linked), "{settings}: {scores}");
    }
}

/// A gold mention no name covers ("pulmonary toxicity") is linked through a word rewrite the
/// corpus taught (`rewrites`: toxicity to disease) when its names then cover it ("pulmonary
/// disease": Lung Diseases); without the table, "toxicity" alone is found (nearest names off).
#[test]
fn a_mention_no_name_covers_is_linked_through_a_learned_rewrite() {
    let env = Env::new();
    std::fs::create_dir_all(env.path("vocab")).expect("mkdir");
    env.write("vocab/rewrites.tsv", "# learned\ntoxicity\tdisease\t10\n");
    let vocab = "D008171\tLung Diseases\tPulmonary Disease\tdisease\nD064420\tDrug-Related Side Effects\tToxicity\tdisease\n";
    let doc = |id: u32| format!("{id}|t|Pulmonary toxicity of amiodarone.\n{id}\t0\t18\tPulmonary toxicity\tDisease\tD008171\n\n");
    for (settings, linked) in [("rewrites = \"/vocab/rewrites.tsv\", link_min_score = 2.0", 1.0), ("link_min_score = 2.0", 0.0)] {
        let scores = scored(&env, vocab, doc, settings);
        assert_eq!(scores["scores"]["link/accuracy"].as_f64(), Some(linked), "{settings}: {scores}");
    }
}

/// A brand before its drug in parentheses ("Elavil (amitriptyline)") is linked as the drug,
/// a short form after a name ("sodium (Na)") as the name, and a drug with its counter-ion
/// ("piperacillin sodium") as the drug alone, in place and in the document's concepts.
#[test]
fn names_in_parentheses_and_salts_are_linked_as_the_drug() {
    let env = Env::new();
    let vocab = "D000639\tAmitriptyline\t\tchemical\nD010878\tPiperacillin\t\tchemical\nD012964\tSodium\t\tchemical\n";
    let doc = |id: u32| {
        format!(
            "{id}|t|Elavil (amitriptyline), piperacillin sodium and sodium (Na).\n{id}\t0\t6\tElavil\tChemical\tD000639\n\
             {id}\t8\t21\tamitriptyline\tChemical\tD000639\n{id}\t24\t43\tpiperacillin sodium\tChemical\tD010878\n\
             {id}\t48\t54\tsodium\tChemical\tD012964\n{id}\t56\t58\tNa\tChemical\tD012964\n\n"
        )
    };
    let scores = scored(&env, vocab, doc, "types = \"chemical\"");
    let s = |k: &str| scores["scores"][k].as_f64();
    assert_eq!(s("link/accuracy"), Some(1.0), "{scores}");
    // the document's mentions: all but the brand, each exactly (the salt over both its words)
    assert_eq!((s("mention-exact/precision"), s("mention-exact/recall")), (Some(1.0), Some(0.8)), "{scores}");
}

/// A name of several concepts at once (the id `D006470+D003556`, as `vocab build
/// --from-corpus` learns a composite gold mention) is a mention of each.
#[test]
fn a_composite_name_is_a_mention_of_each_of_its_concepts() {
    let env = Env::new();
    let vocab = "D006470+D003556\themorrhagic cystitis\t\tdisease\nD003556\tCystitis\t\tdisease\n";
    let doc =
        |id: u32| format!("{id}|t|Hemorrhagic cystitis after ifosfamide.\n{id}\t0\t20\tHemorrhagic cystitis\tDisease\tD006470|D003556\n\n");
    let scores = scored(&env, vocab, doc, "");
    let s = |k: &str| scores["scores"][k].as_f64();
    assert_eq!((s("link/accuracy"), s("document/recall"), s("document/precision")), (Some(1.0), Some(1.0), Some(1.0)), "{scores}");
}
