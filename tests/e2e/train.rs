//! `medtune train`, `eval` and `merge` on the real SmolLM2 over the bundled PubMedQA (tiny
//! settings so they run in seconds on 2 cores): exact resume, the run folder, the metric
//! plugins, the merged checkpoint, and configs refused before any work.

use crate::harness::{Env, repo};

/// A config over the bundled PubMedQA (official split, no annotating plugins) with a tiny
/// training run; `extra` is appended.
pub(crate) fn config(env: &Env, name: &str, extra: &str) -> std::path::PathBuf {
    let data = repo().join("examples/data/pubmedqa");
    let text = format!(
        r#"name = "{name}"
work_dir = {work:?}

[data]
input = {input:?}
test_ground_truth = {truth:?}
split = "official"

[[plugins.chain]]
name = "classification-metrics"
kind = "metric"
settings = {{ labels = "yes,no,maybe" }}

[train]
data = "processed"
max_steps = 4
batch_size = 1
grad_accum = 2
max_len = 64
lr = 1e-3
warmup_steps = 1
checkpoint_every = 2
seed = 7

[train.lora]
r = 2
alpha = 4
dropout = 0.1

[eval]
limit = 4
{extra}
"#,
        work = env.path("work").display().to_string(),
        input = data.join("ori_pqal.json").display().to_string(),
        truth = data.join("test_ground_truth.json").display().to_string(),
    );
    env.write(&format!("{name}.toml"), text)
}

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
}

fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).expect("read").lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// A run stopped after 2 of 4 steps and resumed ends with the very adapters and losses of an
/// uninterrupted run (dropout included: its masks follow the seed and the step). The run
/// folder holds the metrics, plot, checkpoints and manifest; eval scores through the metric
/// plugin; merge writes a checkpoint that scores as the adapter does.
#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does_and_evaluates_and_merges() {
    let env = Env::new();
    let whole = config(&env, "whole", "");
    let parts = config(&env, "parts", "");
    env.run(&["data", "-c", whole.to_str().expect("utf-8")]).expect_code(0);

    let run = env.run(&["train", "-c", whole.to_str().expect("utf-8")]);
    // one question alone is longer than max_len: that record is named and skipped, the rest train
    run.expect_code(2)
        .stdout_has("train: 4/4 steps")
        .stderr_has("skipped: record 27405146: tokenizer: the question alone is 70 tokens, over max_len 64");
    env.run(&["train", "-c", parts.to_str().expect("utf-8"), "--stop-after", "2"]).stdout_has("stopped at step 2");
    assert!(!env.path("work/runs/parts/adapter").exists(), "an interrupted run has no final adapter");
    assert!(env.path("work/runs/parts/checkpoints/step-000002/optimizer.safetensors").is_file());
    env.run(&["train", "-c", parts.to_str().expect("utf-8"), "--resume"]).stdout_has("train: 4/4 steps (resumed at 2)");

    let a = std::fs::read(env.path("work/runs/whole/adapter/adapter_model.safetensors")).expect("adapter");
    let b = std::fs::read(env.path("work/runs/parts/adapter/adapter_model.safetensors")).expect("adapter");
    assert!(a == b, "resumed adapters differ from the uninterrupted run's");
    let (ma, mb) = (jsonl(&env.path("work/runs/whole/metrics.jsonl")), jsonl(&env.path("work/runs/parts/metrics.jsonl")));
    assert_eq!(ma.len(), 4);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!((&x["step"], &x["loss"], &x["lr"]), (&y["step"], &y["loss"], &y["lr"]));
        assert!(x["loss"].as_f64().is_some_and(f64::is_finite) && x["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0));
        assert!(x["memory_mib"].as_f64().is_some_and(|m| m > 0.0));
    }
    // the memory mode (`[train] recompute`: blocks run again in backward) trains alike: the
    // same loss at every step, to float rounding (gradients summed in another order)
    let text =
        std::fs::read_to_string(config(&env, "recomputed", "")).expect("config").replacen("seed = 7\n", "seed = 7\nrecompute = true\n", 1);
    let recomputed = env.write("recomputed.toml", text);
    env.run(&["train", "-c", recomputed.to_str().expect("utf-8")]).expect_code(2).stdout_has("train: 4/4 steps");
    let mr = jsonl(&env.path("work/runs/recomputed/metrics.jsonl"));
    assert_eq!(mr.len(), 4);
    for (x, y) in ma.iter().zip(&mr) {
        let (a, b) = (x["loss"].as_f64().expect("loss"), y["loss"].as_f64().expect("loss"));
        assert!((a - b).abs() < 1e-4 * a.abs(), "step {}: loss {a}, recomputed {b}", x["step"]);
    }
    // `with_conclusions`: each training record also trains with its conclusion (long answer)
    let count = |name: &str, extra: &str| {
        let text = std::fs::read_to_string(config(&env, name, "")).expect("config");
        let text = text.replacen("max_steps = 4\n", "max_steps = 1\n", 1).replacen("max_len = 64\n", &format!("max_len = 192\n{extra}"), 1);
        let path = env.write(&format!("{name}.toml"), text);
        let out = env.run(&["train", "-c", path.to_str().expect("utf-8")]).expect_code(0).stdout.clone();
        let at = out.find(" examples,").unwrap_or_else(|| panic!("{name}: no example count in {out}"));
        out[..at].rsplit(' ').next().and_then(|n| n.parse::<usize>().ok()).expect("count")
    };
    let (plain, twins) = (count("plain", ""), count("twins", "with_conclusions = true\n"));
    assert!(plain > 400 && twins == 2 * plain, "{plain} plain examples, {twins} with conclusions");
    // `conclusion_weight`: the same examples, each also writing its conclusion after the
    // answer; the first step's loss (before any update) is the answer's plus the weight times
    // the conclusion tokens' mean cross-entropy, so it grows linearly with the weight
    let first_loss = |name: &str, weight: f64| {
        let extra = format!("loss = \"choice\"\nconclusion_weight = {weight:?}\n");
        assert_eq!(count(name, &extra), plain, "{name}: the conclusion is a target, not an example");
        let rows = jsonl(&env.path(&format!("work/runs/{name}/metrics.jsonl")));
        (rows[0]["loss"].as_f64().expect("loss"), rows[0]["tokens"].as_u64().expect("tokens"))
    };
    let ((l0, t0), (l1, t1), (l2, _)) = (first_loss("choice", 0.0), first_loss("explain", 1.0), first_loss("explain2", 2.0));
    assert!(t1 > t0, "the conclusions add tokens: {t0} -> {t1}");
    assert!(l1 - l0 > 1.0 && ((l2 - l0) - 2.0 * (l1 - l0)).abs() < 1e-3 * l2, "losses at weights 0, 1, 2: {l0}, {l1}, {l2}");
    let svg = std::fs::read_to_string(env.path("work/runs/whole/loss.svg")).expect("plot");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{svg}");
    let manifest = json(&env.path("work/runs/whole/manifest.json"));
    for key in ["config", "data", "seeds", "model", "medtune", "crates", "train"] {
        assert!(!manifest[key].is_null(), "manifest lacks {key}: {manifest}");
    }
    assert_eq!(manifest["seeds"]["train"], 7);
    assert_eq!(manifest["data"]["train"]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(manifest["crates"]["candle-core"], "0.11.1");
    let peft = json(&env.path("work/runs/whole/adapter/adapter_config.json"));
    assert_eq!((peft["peft_type"].as_str(), peft["r"].as_u64()), (Some("LORA"), Some(2)));

    // eval: through the classification-metrics plugin, on the first 4 test questions
    let run = env.run(&["eval", "-c", whole.to_str().expect("utf-8")]);
    run.expect_code(0).stdout_has("eval on test (4 questions").stdout_has("confusion");
    let scores = json(&env.path("work/runs/whole/eval/scores.json"));
    for key in ["accuracy", "macro_f1", "f1/yes", "f1/maybe", "confusion/yes/no", "classification-metrics/accuracy"] {
        assert!(scores["scores"][key].is_number(), "scores lack {key}: {scores}");
    }
    let with_adapter = jsonl(&env.path("work/runs/whole/eval/predictions.jsonl"));
    assert_eq!(with_adapter.len(), 4);

    // merge: a Hugging Face folder that, loaded as the model, scores as base + adapter does
    let merged = env.path("merged");
    env.run(&["merge", "-c", whole.to_str().expect("utf-8"), "--out", merged.to_str().expect("utf-8")])
        .expect_code(0)
        .stdout_has("merged 210 modules");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(merged.join(f).is_file(), "merged checkpoint lacks {f}");
    }
    let again = config(&env, "whole", &format!("\n[model]\npath = {:?}\n", merged.display().to_string()));
    env.run(&["eval", "-c", again.to_str().expect("utf-8"), "--base"]).expect_code(0);
    let merged_preds = jsonl(&env.path("work/runs/whole/eval-base/predictions.jsonl"));
    for (x, y) in with_adapter.iter().zip(&merged_preds) {
        for i in 0..3 {
            let (p, q) = (x["probabilities"][i].as_f64().expect("p"), y["probabilities"][i].as_f64().expect("p"));
            assert!((p - q).abs() < 2e-3, "{}: adapter {p} vs merged {q}", x["id"]);
        }
    }
}

/// Impossible values, unknown keys and missing files stop `train` before any work, naming
/// the field; nothing is written.
#[test]
fn bad_training_configs_stop_before_any_work() {
    let env = Env::new();
    let cases = [
        ("rank", "[train.lora]\nr = 0\n", "train.lora.r"),
        ("lr", "[train]\nlr = -1.0\n", "train.lr"),
        ("unknown", "[train]\nlearning_rate = 0.1\n", "unknown field `learning_rate`"),
        ("model", "[model]\npath = \"missing.gguf\"\n", "model.path"),
        ("dropout", "[train.lora]\ndropout = 1.5\n", "train.lora.dropout"),
        ("schedule", "[train]\nschedule = \"exponential\"\n", "train.schedule"),
        ("loss", "[train]\nloss = \"hinge\"\n", "train.loss"),
        ("conclusion", "[train]\nconclusion_weight = -0.5\n", "train.conclusion_weight"),
    ];
    for (name, section, needle) in cases {
        let text = std::fs::read_to_string(config(&env, name, "")).expect("config");
        // replace the section's first key line with the bad one
        let (head, key) = section.split_once('\n').expect("section");
        let key_name = key.split('=').next().expect("key").trim();
        let text = if text.contains(&format!("{head}\n")) && !key_name.is_empty() {
            let mut t = text.replacen(&format!("{head}\n"), section, 1);
            // drop the original line of that key, if any, after the inserted one
            if let Some(at) = t.find(section) {
                let rest = t[at + section.len()..].to_owned();
                let filtered: Vec<&str> = rest.lines().filter(|l| !l.trim_start().starts_with(&format!("{key_name} ="))).collect();
                t = format!("{}{}\n", &t[..at + section.len()], filtered.join("\n"));
            }
            t
        } else {
            format!("{text}\n{section}")
        };
        let path = env.write(&format!("{name}.toml"), text);
        let run = env.run(&["train", "-c", path.to_str().expect("utf-8")]);
        assert_ne!(run.code, Some(0), "{name}: accepted");
        run.stderr_has(needle);
        assert!(!env.path(&format!("work/runs/{name}")).exists(), "{name}: wrote a run folder");
    }
    // a config whose data stage has not run names the file and the command to run
    let path = config(&env, "nodata", "");
    env.run(&["train", "-c", path.to_str().expect("utf-8")]).stderr_has("run the data stage first");
}

/// A run on several GPUs is checked before any work: `--gpus` (or `train.gpus`) needs a CUDA
/// model, at least one GPU, and a `grad_accum` the GPUs share evenly; a CPU build says it
/// cannot. Nothing is written.
#[test]
fn a_run_on_several_gpus_is_checked_before_any_work() {
    let env = Env::new();
    let cpu = config(&env, "cpu", "");
    let cpu = cpu.to_str().expect("utf-8");
    let run = env.run(&["train", "-c", cpu, "--gpus", "2"]);
    assert_ne!(run.code, Some(0), "a CPU config on 2 GPUs was accepted");
    run.stderr_has("train.gpus").stderr_has("2 GPUs need model.device = \"cuda\" (it is \"cpu\")");
    let cuda = config(&env, "cuda", "\n[model]\ndevice = \"cuda\"\n");
    let cuda = cuda.to_str().expect("utf-8");
    env.run(&["train", "-c", cuda, "--gpus", "0"]).stderr_has("train.gpus: must be at least 1");
    env.run(&["train", "-c", cuda, "--gpus", "4"]).stderr_has("train.grad_accum = 2 is not a multiple of 4");
    #[cfg(not(feature = "cuda"))]
    env.run(&["train", "-c", cuda, "--gpus", "2"]).stderr_has("several GPUs need a medtune built with --features cuda");
    assert!(!env.path("work/runs").exists(), "a refused run wrote a run folder");
}

/// How many GPUs `nvidia-smi` lists.
#[cfg(feature = "cuda")]
fn gpu_count() -> usize {
    let out = std::process::Command::new("nvidia-smi").arg("-L").output().expect("nvidia-smi");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("GPU ")).count()
}

/// The adapter tensors of a run, by name.
#[cfg(feature = "cuda")]
fn adapter(env: &Env, run: &str) -> std::collections::HashMap<String, Vec<f32>> {
    let path = env.path(&format!("work/runs/{run}/adapter/adapter_model.safetensors"));
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tensors.into_iter().map(|(k, t)| (k, t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32 adapter"))).collect()
}

/// On CUDA, data parallelism through real NCCL: one rank (`--gpus 1`, a communicator of one)
/// ends with exactly a plain run's adapters, also when its checkpoints resume in a plain run
/// and the reverse; on a machine of two GPUs or more, two ranks end
/// within rounding of it, step by step. A rank that cannot start (`--gpus N+1` on N GPUs: the
/// last rank has no GPU) stops the others, and the launcher names it.
#[cfg(feature = "cuda")]
#[test]
fn ranks_sum_their_gradients_over_nccl_and_a_failed_rank_stops_the_run() {
    let env = Env::new();
    let extra = "\n[model]\ndevice = \"cuda\"\n";
    let plain = config(&env, "plain", extra);
    env.run(&["data", "-c", plain.to_str().expect("utf-8")]).expect_code(0);
    env.run(&["train", "-c", plain.to_str().expect("utf-8")]).expect_code(2);
    let one = config(&env, "one", extra);
    env.run(&["train", "-c", one.to_str().expect("utf-8"), "--gpus", "1"]).expect_code(2).stdout_has("train: 4/4 steps");
    assert_eq!(adapter(&env, "one"), adapter(&env, "plain"), "one rank over NCCL differs from a plain run");
    let manifest = json(&env.path("work/runs/one/manifest.json"));
    assert_eq!(manifest["gpus"], 1, "{manifest}");
    // a checkpoint of a run over NCCL resumes in a plain run (and the reverse) and ends where
    // an uninterrupted run does
    let half = config(&env, "half", extra);
    let text = std::fs::read_to_string(&half).expect("config").replace("checkpoint_every = 2", "checkpoint_every = 1");
    let half = env.write("half.toml", text);
    env.run(&["train", "-c", half.to_str().expect("utf-8"), "--gpus", "1", "--stop-after", "2"]).stdout_has("stopped at step 2");
    env.run(&["train", "-c", half.to_str().expect("utf-8"), "--resume", "--stop-after", "3"]).stdout_has("stopped at step 3");
    env.run(&["train", "-c", half.to_str().expect("utf-8"), "--resume", "--gpus", "1"])
        .expect_code(2)
        .stdout_has("train: 4/4 steps (resumed at 3)");
    assert_eq!(adapter(&env, "half"), adapter(&env, "plain"), "a run resumed across NCCL and plain differs from a plain run");

    let gpus = gpu_count();
    if gpus >= 2 {
        let two = config(&env, "two", extra);
        env.run(&["train", "-c", two.to_str().expect("utf-8"), "--gpus", "2"]).expect_code(2).stdout_has("train: 4/4 steps");
        let (a, b) = (jsonl(&env.path("work/runs/plain/metrics.jsonl")), jsonl(&env.path("work/runs/two/metrics.jsonl")));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            let (lx, ly) = (x["loss"].as_f64().expect("loss"), y["loss"].as_f64().expect("loss"));
            assert!((lx - ly).abs() < 1e-4 * lx.abs().max(1.0), "step {}: loss {lx} on one GPU, {ly} on two", x["step"]);
            assert_eq!(x["tokens"], y["tokens"], "step {}: the two GPUs saw other tokens", x["step"]);
        }
        let (pa, pb) = (adapter(&env, "plain"), adapter(&env, "two"));
        for (name, va) in &pa {
            let diff = va.iter().zip(&pb[name]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "{name}: the adapters of one and two GPUs differ by {diff}");
        }
    }

    let dead = config(&env, "dead", extra);
    let n = (gpus + 1).to_string();
    let started = std::time::Instant::now();
    let run = env.run(&["train", "-c", dead.to_str().expect("utf-8"), "--gpus", &n]);
    assert_ne!(run.code, Some(0), "a run with a rank short of a GPU succeeded");
    run.stderr_has(&format!("rank {gpus} of {n} (GPU {gpus}) failed")).stderr_has("stopped the other ranks");
    assert!(started.elapsed().as_secs() < 120, "the other ranks were not stopped: {:?}", started.elapsed());
    assert!(!env.path("work/runs/dead/adapter").exists(), "a failed run wrote an adapter");
}
