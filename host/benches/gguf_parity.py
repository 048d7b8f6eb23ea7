"""transformers' GGUF loader beside medtune on the same GGUF file: token ids, the chat prompt,
last-position logits and greedy tokens (host/benches/gguf_parity.rs writes medtune's side).

    python3 host/benches/gguf_parity.py MODEL.gguf MEDTUNE_OUT_DIR [REPORT.json]

Needs torch, transformers and the `gguf` package; the CPU is enough. transformers
dequantizes every weight to f32, so its logits are compared with medtune's f32 run (the
GGUF blocks dequantized too) and, for what training and serving use, with the blocks kept.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_path, ours_dir = sys.argv[1], sys.argv[2]
report_path = sys.argv[3] if len(sys.argv) > 3 else os.path.join(ours_dir, "parity.json")
folder, name = os.path.dirname(os.path.abspath(gguf_path)), os.path.basename(gguf_path)
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
ours = json.load(open(os.path.join(ours_dir, "medtune.json")))
torch.set_grad_enabled(False)


def greedy(ids, n):
    out, past, x = [], None, torch.tensor([ids])
    for _ in range(n):
        r = model(x, past_key_values=past, use_cache=True)
        past = r.past_key_values
        nxt = int(r.logits[0, -1].argmax())
        out.append(nxt)
        x = torch.tensor([[nxt]])
    return out


rows = []
for i, case in enumerate(ours["cases"]):
    chat = tok.apply_chat_template([{"role": "user", "content": case["prompt"]}], tokenize=False, add_generation_prompt=True)
    hf_ids = tok(chat, add_special_tokens=False)["input_ids"]
    plain = tok(case["prompt"], add_special_tokens=False)["input_ids"]
    hf = model(torch.tensor([case["ids"]])).logits[0, -1].numpy()
    row = {"prompt": case["prompt"], "same_chat_text": chat == case["chat"], "same_chat_ids": hf_ids == case["ids"],
           "same_plain_ids": plain == case["plain_ids"], "tokens": len(case["ids"])}
    for kind in ["f32", "kept"]:
        ml = np.fromfile(os.path.join(ours_dir, f"{kind}-{i}.f32"), dtype="<f4")
        top_hf, top_ml = np.argsort(-hf)[:5], np.argsort(-ml)[:5]
        row[kind] = {"max_abs_diff": float(np.abs(ml - hf).max()), "top1_same": bool(top_hf[0] == top_ml[0]),
                     "top5_overlap": len(set(top_hf.tolist()) & set(top_ml.tolist())),
                     "top1": [int(top_hf[0]), int(top_ml[0])], "logit_scale": float(np.abs(hf).max())}
    hf_greedy = greedy(case["ids"], len(case["greedy"]))
    row["greedy_same"] = sum(1 for a, b in zip(hf_greedy, case["greedy"]) if a == b) if hf_greedy == case["greedy"] else \
        next(k for k, (a, b) in enumerate(zip(hf_greedy, case["greedy"])) if a != b)
    row["greedy_of"] = len(case["greedy"])
    row["greedy_text"] = [tok.decode(hf_greedy), tok.decode(case["greedy"])]
    if not row["same_chat_ids"]:
        row["ids"] = {"hf": hf_ids, "medtune": case["ids"]}
    if not row["same_plain_ids"]:
        row["plain"] = {"hf": plain, "medtune": case["plain_ids"]}
    rows.append(row)
    print(json.dumps({k: row[k] for k in ["same_chat_text", "same_chat_ids", "same_plain_ids", "tokens", "f32", "kept", "greedy_same"]}))
json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "gguf": name, "rows": rows},
          open(report_path, "w"), indent=1)
