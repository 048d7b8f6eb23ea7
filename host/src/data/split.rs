//! The official PubMedQA PQA-L split (`preprocess/split_dataset.py pqal`): with Python's
//! `random.seed(0)`, label-stratified halves give the 500 test questions, then the other 500
//! are cut into 10 folds. medtune uses fold 0 as `dev` and folds 1-9 as `train`.

use super::pyrandom::PyRandom;

const LABELS: [&str; 3] = ["yes", "no", "maybe"];

/// The official folds of `(id, label)` pairs given in file order: `(test ids, 10 folds)`.
/// Unlabelled records are ignored.
pub fn official_folds(records: &[(String, String)]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut rng = PyRandom::new(0);
    let mut halves = split(records.to_vec(), 2, &mut rng);
    let test: Vec<String> = halves.pop().unwrap_or_default().into_iter().map(|(id, _)| id).collect();
    let cv = halves.pop().unwrap_or_default();
    let folds = split(cv, 10, &mut rng).into_iter().map(|f| f.into_iter().map(|(id, _)| id).collect()).collect();
    (test, folds)
}

/// `split(dataset, fold)` of the official script; a "dataset" is an ordered list.
fn split(dataset: Vec<(String, String)>, fold: usize, rng: &mut PyRandom) -> Vec<Vec<(String, String)>> {
    let per_label: Vec<Vec<Vec<(String, String)>>> = LABELS
        .iter()
        .map(|label| {
            let mut of_label: Vec<(String, String)> = dataset.iter().filter(|(_, l)| l == label).cloned().collect();
            rng.shuffle(&mut of_label);
            let n = of_label.len().div_ceil(fold);
            (0..fold)
                .map(|i| {
                    let start = (i * n).min(of_label.len());
                    let end = if i == fold - 1 { of_label.len() } else { ((i + 1) * n).min(of_label.len()) };
                    of_label[start..end].to_vec()
                })
                .collect()
        })
        .collect();
    let mut output: Vec<Vec<(String, String)>> =
        (0..fold).map(|i| per_label.iter().flat_map(|parts| parts[i].iter().cloned()).collect()).collect();
    if output[fold - 1].len() != output[0].len() {
        for i in 0..fold - 1 {
            let picked = rng.choice(output[i].len());
            let moved = output[i].remove(picked);
            output[fold - 1].push(moved);
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: tests/fixtures/pubmedqa_folds.json, made by the reference script
    /// tests/fixtures/pubmedqa_folds.py (the official split code) from the bundled PQA-L.
    #[test]
    fn reproduces_the_official_split() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let data: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(root.join("examples/data/pubmedqa/ori_pqal.json")).expect("PQA-L"))
                .expect("JSON");
        let records: Vec<(String, String)> =
            data.iter().map(|(id, v)| (id.clone(), v["final_decision"].as_str().expect("label").to_owned())).collect();
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/pubmedqa_folds.json")).expect("golden")).expect("JSON");
        let (test, folds) = official_folds(&records);
        assert_eq!(serde_json::json!(test), golden["test"]);
        assert_eq!(serde_json::json!(folds), golden["folds"]);
        let truth: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(root.join("examples/data/pubmedqa/test_ground_truth.json")).expect("truth"))
                .expect("JSON");
        let mut a: Vec<&String> = test.iter().collect();
        let mut b: Vec<&String> = truth.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "the official test half is test_ground_truth.json");
    }
}
