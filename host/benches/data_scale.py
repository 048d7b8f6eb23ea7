"""The data stage at scale (issue 30, item 8): writes N synthetic PubMedQA-style JSONL records
(questions and abstract sentences drawn from the bundled PubMedQA PQA-L, MIT licence, with a
seeded generator), a config with every default plugin, runs `medtune data` on them, and prints
records/s and the peak memory (the process's maximum resident set, from getrusage).

    python3 host/benches/data_scale.py --records 1000000 --medtune target/release/medtune --vocab work/vocab

The input is written once per size into --dir (default target/data-scale) and reused.
"""
import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generate(path, n, seed):
    with open(os.path.join(ROOT, "examples/data/pubmedqa/ori_pqal.json")) as f:
        pqal = json.load(f)
    questions = [r["QUESTION"] for r in pqal.values()]
    sentences = [s for r in pqal.values() for c in r["CONTEXTS"] for s in re.split(r"(?<=\.) ", c) if len(s) > 20]
    conclusions = [r["LONG_ANSWER"] for r in pqal.values()]
    rng = random.Random(seed)
    tmp = path + ".part"
    with open(tmp, "w") as f:
        for i in range(n):
            record = {
                "id": f"syn-{i}",
                "question": rng.choice(questions),
                "context": " ".join(rng.choice(sentences) for _ in range(rng.randint(5, 9))),
                "answer": rng.choice(["yes", "yes", "no", "maybe"]),
                "long_answer": rng.choice(conclusions),
            }
            f.write(json.dumps(record) + "\n")
    os.rename(tmp, path)


CONFIG = """name = "data-scale"
work_dir = {work}

[data]
input = {input}
split = "random"
batch_size = 64

[plugins]
watch = false

[[plugins.chain]]
name = "terminology-normalizer"
kind = "normalizer"
memory_mib = 256
timeout_ms = 60000
grants = {{ "/vocab" = {vocab} }}
settings = {{ fuzzy_min_len = 8 }}

[[plugins.chain]]
name = "abbreviation-disambiguator"
kind = "disambiguator"
memory_mib = 256
timeout_ms = 60000
grants = {{ "/vocab" = {vocab} }}
settings = {{ threshold = 0.5 }}

[[plugins.chain]]
name = "synonym-swap"
kind = "augmenter"
timeout_ms = 60000
grants = {{ "/vocab" = {vocab} }}
settings = {{ rate = 0.5, variants = 1 }}

[[plugins.chain]]
name = "entity-mask"
kind = "augmenter"
timeout_ms = 60000
settings = {{ rate = 0.15 }}

[[plugins.chain]]
name = "rare-concept-oversampler"
kind = "augmenter"
timeout_ms = 60000
settings = {{ max_count = 1, copies = 1, max_copies = 2 }}

[[plugins.chain]]
name = "label-balancer"
kind = "augmenter"
timeout_ms = 60000
settings = {{ max_copies = 6 }}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--medtune", default=os.path.join(ROOT, "target/release/medtune"))
    ap.add_argument("--vocab", default=os.path.join(ROOT, "work/vocab"))
    ap.add_argument("--dir", default=os.path.join(ROOT, "target/data-scale"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    data = os.path.join(args.dir, f"synthetic-{args.records}.jsonl")
    if not os.path.exists(data):
        t = time.time()
        generate(data, args.records, args.seed)
        print(f"generated {args.records} records ({os.path.getsize(data) / 2**20:.0f} MiB) in {time.time() - t:.0f} s", file=sys.stderr)
    config = os.path.join(args.dir, f"data-scale-{args.records}.toml")
    with open(config, "w") as f:
        q = json.dumps  # a TOML basic string
        f.write(CONFIG.format(work=q(os.path.join(args.dir, f"work-{args.records}")), input=q(data), vocab=q(os.path.abspath(args.vocab))))
    t = time.time()
    run = subprocess.run([args.medtune, "data", "--config", config], capture_output=True, text=True)
    seconds = time.time() - t
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if run.returncode not in (0, 2):
        print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
        sys.exit(f"medtune data exited with {run.returncode}")
    result = {
        "records": args.records,
        "seconds": round(seconds, 1),
        "records_per_s": round(args.records / seconds),
        "peak_rss_mib": round(peak_mib),
        "input_mib": round(os.path.getsize(data) / 2**20),
        "exit": run.returncode,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
