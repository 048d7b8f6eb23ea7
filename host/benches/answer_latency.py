"""/v1/answer latency of a running `medtune serve` (client mode), or the same questions answered
by Hugging Face transformers in-process (hf mode), plus generated tokens/s.

    python3 answer_latency.py serve URL TEST_JSONL N
    python3 answer_latency.py hf MERGED_DIR TEST_JSONL N THREADS MAX_LEN
Questions: the first N records of the data stage's test split (question + context). The
server cuts each prompt to its config's `max_len` tokens; hf mode cuts to MAX_LEN, which
answer_latency.sh reads from the same config, so both sides answer prompts of one length."""
import json, sys, time, urllib.request

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

mode, where, test, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
records = [json.loads(l) for l in open(test)][:n]

def post(path, body):
    req = urllib.request.Request(where + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())

if mode == "serve":
    post("/v1/answer", {"question": records[0]["question"], "context": records[0]["context"]})  # warm-up
    lat, answers = [], ""
    for r in records:
        t = time.time(); a = post("/v1/answer", {"question": r["question"], "context": r["context"]}); lat.append(time.time() - t)
        answers += a["answer"][0]
    t = time.time()
    name = json.loads(urllib.request.urlopen(where + "/v1/models").read())["data"][0]["id"]
    out = post("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "What is aspirin used for?"}], "max_tokens": 64})
    gen = out["usage"]["completion_tokens"] / (time.time() - t)
    engine = post("/v1/answer", {"question": "Is it?"})["engine"]
else:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(int(sys.argv[5]))
    max_len = int(sys.argv[6])
    tok = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32).eval()
    label_ids = [tok.encode(" " + l, add_special_tokens=False)[0] for l in ("yes", "no", "maybe")]
    def prompt(r):
        head = tok.encode("Context: ", add_special_tokens=False)
        tail = tok.encode(f"\nQuestion: {r['question']}\nAnswer yes, no or maybe.\nAnswer:", add_special_tokens=False)
        body = tok.encode(r["context"].replace("\n\n", " "), add_special_tokens=False)[: max_len - len(head) - len(tail) - 2]
        return head + body + tail
    lat, answers, lengths = [], "", []
    with torch.no_grad():
        model(input_ids=torch.tensor([prompt(records[0])]))
        for r in records:
            ids = prompt(r)
            t = time.time()
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            p = torch.softmax(logits[label_ids], -1)
            lat.append(time.time() - t)
            answers += "ynm"[int(p.argmax())]
            lengths.append(len(ids))
        # the ChatML prompt medtune builds for SmolLM2 (the merged folder has no chat template)
        ids = torch.tensor([tok.encode("<|im_start|>user\nWhat is aspirin used for?<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)])
        t = time.time()
        out = model.generate(ids, max_new_tokens=64, do_sample=False, min_new_tokens=64)
        gen = (out.shape[1] - ids.shape[1]) / (time.time() - t)
    engine = "transformers"
    print(f"transformers: prompts of {min(lengths)}-{max(lengths)} tokens", file=sys.stderr)
print(json.dumps({"engine": engine, "answers": answers, "questions": len(lat), "p50_ms": round(pct(lat, 50) * 1e3, 1), "p95_ms": round(pct(lat, 95) * 1e3, 1), "generate_tokens_per_s": round(gen, 1)}))
