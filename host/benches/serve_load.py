"""Continuous batching under load, and time to first token, for `medtune serve` (client
mode) or Hugging Face transformers in-process (hf mode, time to first token only).

    python3 serve_load.py serve URL REQUESTS MAX_TOKENS [--ignore-eos]
    python3 serve_load.py hf MODEL_DIR THREADS

serve: completion tokens/s of one stream (REQUESTS requests one after another), then of 16
concurrent streams (REQUESTS each), and the time to the first streamed token of a 256-token
prompt (p50 of 10, idle server). hf: the same prompt's time to its first token (a forward pass
over the prompt with the last position's logits, as `generate` does, and the argmax), p50 of 10. The prompt: a clinical sentence repeated, cut
to 256 tokens by the model's own tokenizer (both sides use SmolLM2's). With MODELS=a,b,c the
requests name these models in turn (stream k always model k mod 3): several adapters batched
together (`serve --adapter NAME=DIR`).

serve also drives llama.cpp's `llama-server` (host/benches/llama_server.sh), known by its
/v1/models answer (owned_by "llamacpp"). Its requests are the same plus what makes it do
medtune's work: "temperature": 0 (greedy, medtune's default; llama-server samples at 0.8) and
"cache_prompt": false (no reuse of a previous request's prompt KV; medtune has none), and with
--ignore-eos "ignore_eos": true (exactly max_tokens each; medtune, which refuses unknown fields,
is sent none of these and may stop at EOS: the rates count the tokens each server says it
generated either way)."""
import json
import os, statistics, sys, threading, time, urllib.request

SENTENCE = "The patient was admitted with chest pain, shortness of breath and a history of hypertension. "
QUESTIONS = ["Write a long story about a hospital.", "Describe the work of a nurse in detail.", "Explain how the heart works.", "Write a long letter to a doctor."]


def post(url, body, stream=False):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=900)


def serve(url, requests, max_tokens, ignore_eos=False):
    info = json.loads(urllib.request.urlopen(url + "/v1/models").read())["data"][0]
    name = info["id"]
    # llama-server: greedy and no prompt reuse, as medtune serves (see the module's doc)
    llama = info.get("owned_by") == "llamacpp"
    extra = {"temperature": 0, "cache_prompt": False, **({"ignore_eos": True} if ignore_eos else {})} if llama else {}
    # MODELS=a,b,c: the streams take these models in turn (several adapters in one batch)
    models = os.environ.get("MODELS", name).split(",")

    def one(i, model=name):
        body = {"model": model, "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], "max_tokens": max_tokens, **extra}
        with post(url + "/v1/chat/completions", body) as r:
            return json.loads(r.read())["usage"]["completion_tokens"]

    one(0)  # warm-up
    t = time.time()
    single = sum(one(i) for i in range(requests))
    single_rate = single / (time.time() - t)
    totals = [0] * 16

    def stream_worker(k):
        totals[k] = sum(one(k * requests + i, models[k % len(models)]) for i in range(requests))

    t = time.time()
    threads = [threading.Thread(target=stream_worker, args=(k,)) for k in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    multi_rate = sum(totals) / (time.time() - t)
    # a raw prompt of exactly 256 tokens (the server counts them)
    words = 256
    while True:
        prompt = " ".join((SENTENCE * 40).split()[:words])
        with post(url + "/v1/completions", {"model": name, "prompt": prompt, "max_tokens": 1, **extra}) as r:
            n = json.loads(r.read())["usage"]["prompt_tokens"]
        if n == 256 or words <= 1:
            break
        words += 256 - n if abs(256 - n) > 1 else (1 if n < 256 else -1)
    ttft = []
    for _ in range(10):
        t = time.time()
        with post(url + "/v1/completions", {"model": name, "prompt": prompt, "max_tokens": 4, "stream": True, **extra}) as r:
            for line in r:
                if line.startswith(b"data: ") and b'"text":"' in line and b'"text":""' not in line:
                    ttft.append(time.time() - t)
                    break
            r.read()
    print(json.dumps({
        **({"server": "llama-server"} if llama else {}),
        "one_stream_tokens_per_s": round(single_rate, 1),
        "sixteen_streams_tokens_per_s": round(multi_rate, 1),
        "ratio": round(multi_rate / single_rate, 2),
        "ttft_256_p50_ms": round(statistics.median(ttft) * 1e3, 1),
        "prompt_tokens": n,
    }))


def hf(model_dir, threads):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    words = 256
    while True:
        ids = tok.encode(" ".join((SENTENCE * 40).split()[:words]), add_special_tokens=False)
        if len(ids) == 256 or words <= 1:
            break
        words += 256 - len(ids) if abs(256 - len(ids)) > 1 else (1 if len(ids) < 256 else -1)
    x = torch.tensor([ids])
    ttft = []
    with torch.no_grad():
        model(input_ids=x, use_cache=True, logits_to_keep=1)  # warm-up
        for _ in range(10):
            t = time.time()
            # the last position's logits only, as `generate` asks for them
            out = model(input_ids=x, use_cache=True, logits_to_keep=1)
            int(out.logits[0, -1].argmax())
            ttft.append(time.time() - t)
    print(json.dumps({"engine": "transformers", "ttft_256_p50_ms": round(statistics.median(ttft) * 1e3, 1), "prompt_tokens": len(ids)}))


if sys.argv[1] == "serve":
    serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), ignore_eos="--ignore-eos" in sys.argv[5:])
else:
    hf(sys.argv[2], int(sys.argv[3]))
