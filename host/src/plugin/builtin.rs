//! The default plugins, compiled from plugins/ by build.rs and embedded in the binary.

/// A plugin that ships inside the `medtune` binary.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Its name (the crate name, which is what `describe()` returns).
    pub name: &'static str,
    /// The component's bytes.
    pub wasm: &'static [u8],
}

const TABLE: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// Every default plugin.
pub fn builtins() -> impl Iterator<Item = Builtin> {
    TABLE.iter().map(|&(name, wasm)| Builtin { name, wasm })
}

/// The default plugin called `name`.
pub fn builtin(name: &str) -> Option<Builtin> {
    builtins().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::types::{Prediction, Reference};
    use crate::plugin::{PluginEngine, Sandbox};

    /// Golden values: tests/fixtures/metrics_golden.json, computed by scikit-learn with the
    /// reference script tests/fixtures/metrics_golden.py.
    #[test]
    fn classification_metrics_equal_sklearn() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/metrics_golden.json")).expect("golden file"))
                .expect("golden JSON");
        let engine = PluginEngine::new(None).expect("engine");
        let b = builtin("classification-metrics").expect("built in");
        let mut plugin = engine.load(b.wasm, "builtin:classification-metrics", None, Sandbox::default()).expect("load");
        for case in golden["cases"].as_array().expect("cases") {
            let strings = |k: &str| -> Vec<String> {
                case[k].as_array().expect("array").iter().map(|v| v.as_str().expect("string").to_owned()).collect()
            };
            let (truth, pred) = (strings("y_true"), strings("y_pred"));
            let preds: Vec<Prediction> = pred.iter().enumerate().map(|(i, l)| Prediction { id: i.to_string(), label: l.clone() }).collect();
            let refs: Vec<Reference> = truth
                .iter()
                .enumerate()
                .map(|(i, l)| Reference {
                    id: i.to_string(),
                    label: l.clone(),
                    tags: case["tags"][i].as_array().expect("tags").iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
                })
                .collect();
            let scores = plugin.compute(&preds, &refs).expect("call").expect("scores");
            let get = |name: &str| scores.iter().find(|s| s.name == name).map(|s| s.value).unwrap_or(f64::NAN);
            let close = |name: &str, want: f64| {
                let got = get(name);
                assert!((got - want).abs() < 1e-12, "{} {name}: {got} != sklearn {want}", case["name"]);
            };
            close("accuracy", case["accuracy"].as_f64().expect("f64"));
            close("macro_f1", case["macro_f1"].as_f64().expect("f64"));
            close("rare_concept_accuracy", case["rare_concept_accuracy"].as_f64().expect("f64"));
            close("rare_concept_count", case["rare_concept_count"].as_f64().expect("f64"));
            for (i, label) in strings("labels").iter().enumerate() {
                for k in ["precision", "recall", "f1", "support"] {
                    close(&format!("{k}/{label}"), case[k][i].as_f64().expect("f64"));
                }
                for (j, other) in strings("labels").iter().enumerate() {
                    close(&format!("confusion/{label}/{other}"), case["confusion"][i][j].as_f64().expect("f64"));
                }
            }
        }
    }

    /// Golden values: tests/fixtures/text_metrics_golden.json, from SQuAD's official functions
    /// and rouge-score's ROUGE-L in the reference script tests/fixtures/text_metrics_golden.py;
    /// one question a call (the scores are means), then all at once.
    #[test]
    fn text_metrics_equal_squad_and_rouge_score() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("tests/fixtures/text_metrics_golden.json")).expect("golden file"))
                .expect("golden JSON");
        let engine = PluginEngine::new(None).expect("engine");
        let b = builtin("text-metrics").expect("built in");
        let mut plugin = engine.load(b.wasm, "builtin:text-metrics", None, Sandbox::default()).expect("load");
        let cases = golden["cases"].as_array().expect("cases");
        let pair = |i: usize, c: &serde_json::Value| {
            let text = |k: &str| c[k].as_str().expect("string").to_owned();
            (
                Prediction { id: i.to_string(), label: text("prediction") },
                Reference { id: i.to_string(), label: text("reference"), tags: vec![] },
            )
        };
        let mut sums = [0.0; 3];
        for (i, c) in cases.iter().enumerate() {
            let (p, r) = pair(i, c);
            let scores = plugin.compute(&[p], &[r]).expect("call").expect("scores");
            for (k, name) in ["exact_match", "token_f1", "rouge_l"].iter().enumerate() {
                let got = scores.iter().find(|s| s.name == *name).map_or(f64::NAN, |s| s.value);
                let want = c[*name].as_f64().expect("f64");
                assert!((got - want).abs() < 1e-12, "case {i} {name}: {got} != {want} ({c})");
                sums[k] += want;
            }
        }
        let (preds, refs): (Vec<Prediction>, Vec<Reference>) = cases.iter().enumerate().map(|(i, c)| pair(i, c)).unzip();
        let scores = plugin.compute(&preds, &refs).expect("call").expect("scores");
        let get = |name: &str| scores.iter().find(|s| s.name == name).map_or(f64::NAN, |s| s.value);
        assert!((get("rouge_l") - sums[2] / cases.len() as f64).abs() < 1e-12);
        assert_eq!(get("count"), cases.len() as f64);
    }
}
