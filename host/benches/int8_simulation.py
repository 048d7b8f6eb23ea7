"""How far 8-bit activations move the yes/no/maybe probabilities, simulated in PyTorch on the
merged f32 model: every linear layer but the output one gets int8 weights (per output row) and
8-bit activations, per tensor (asymmetric, as `DynamicQuantizeLinear`) or per token
(symmetric), optionally after SmoothQuant scales of strength alpha measured on 32 training
prompts. Prints, against f32, the largest and mean change of a probability over N test prompts
and how many answers stay the same, after the f32 model's own margins (its two likeliest answers'
probabilities apart, quantiles). This chose the int8 export's alpha and its per-token layers.

    N=100 python3 int8_simulation.py MODE:ALPHA[:SKIP...] ...

MODE: tensor | token | mix2 (per token for o_proj and down_proj, per tensor elsewhere, as
`medtune export --precision int8`); ALPHA: a number, or - for no smoothing; SKIP: module name
parts left in f32. Needs torch, transformers, tokenizers and `medtune run` done first."""
import json, os, sys
import numpy as np, torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

torch.set_num_threads(2)
root = os.path.join(os.path.dirname(__file__), "..", "..")
run = os.path.join(root, "work/runs/pubmedqa-smollm2/merged")
tok = Tokenizer.from_file(os.path.join(run, "tokenizer.json"))
m = AutoModelForCausalLM.from_pretrained(run, dtype=torch.float32).eval()
enc = lambda s: tok.encode(s, add_special_tokens=False).ids
labels = [enc(" yes")[0], enc(" no")[0], enc(" maybe")[0]]

def prompt(r, n=256):
    head, tail = enc("Context: "), enc(f"\nQuestion: {r['question']}\nAnswer yes, no or maybe.\nAnswer:")
    return head + enc(r["context"].replace("\n\n", " "))[: n - len(head) - len(tail) - 2] + tail

def jsonl(split, n):
    return [json.loads(l) for l in open(os.path.join(root, f"work/data/processed/{split}.jsonl"))][:n]

tests = [prompt(r) for r in jsonl("test", int(os.environ.get("N", "30")))]
calib = [prompt(r) for r in jsonl("train", 32)]
lin = {n: mod for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear) and n != "lm_head"}
orig = {n: mod.forward for n, mod in lin.items()}
W0 = {n: mod.weight.data.clone() for n, mod in lin.items()}

amax = {}
def recorder(n):
    def f(x):
        a = x.detach().abs().reshape(-1, x.shape[-1]).amax(0)
        amax[n] = torch.maximum(amax[n], a) if n in amax else a
        return orig[n](x)
    return f
for n, mod in lin.items():
    mod.forward = recorder(n)
with torch.no_grad():
    for ids in calib:
        m(torch.tensor([ids]))
for n, mod in lin.items():
    mod.forward = orig[n]

def probs():
    out = []
    with torch.no_grad():
        for ids in tests:
            out.append(torch.softmax(m(torch.tensor([ids])).logits[0, -1, labels], 0).numpy())
    return np.array(out)
ref = probs()
top2 = np.sort(ref, 1)[:, -2:]
print(json.dumps({"f32_margin_quantiles_10_25_50": np.quantile(top2[:, 1] - top2[:, 0], [0.1, 0.25, 0.5]).round(3).tolist()}), flush=True)

c = m.config
nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads
scale = lambda a, w, alpha: (a**alpha / w ** (1 - alpha)).clamp(1e-4, 1e4)
def smoothing(alpha):
    S = {}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        for grp in (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["mlp.gate_proj", "mlp.up_proj"]):
            s = scale(amax[p + grp[0]], torch.stack([W0[p + g].abs().amax(0) for g in grp]).amax(0), alpha)
            for g in grp:
                S[p + g] = s
        a, w = amax[p + "self_attn.o_proj"], W0[p + "self_attn.o_proj"].abs().amax(0)
        g = nh // nkv  # a key/value head's query heads share its scale
        s = scale(a.view(nkv, g, hd).amax(1), w.view(nkv, g, hd).amax(1), alpha)
        S[p + "self_attn.o_proj"] = s[:, None, :].expand(nkv, g, hd).reshape(-1)
        S[p + "mlp.down_proj"] = scale(amax[p + "mlp.down_proj"], W0[p + "mlp.down_proj"].abs().amax(0), alpha)
    return S

def q_weight(w):
    s = w.abs().amax(1, keepdim=True) / 127
    s[s == 0] = 1
    return (w / s).round().clamp(-127, 127) * s

def q_act(x, mode):
    if mode == "tensor":
        lo, hi = min(0.0, x.min().item()), max(0.0, x.max().item())
        sc = (hi - lo) / 255 or 1.0
        zp = np.clip(np.round(-lo / sc), 0, 255)
        return ((torch.round(x / sc) + zp).clamp(0, 255) - zp) * sc
    s = x.abs().amax(-1, keepdim=True) / 127
    s[s == 0] = 1
    return (x / s).round().clamp(-127, 127) * s

def run(mode, alpha, skip):
    S = smoothing(alpha) if alpha is not None else {}
    for n, mod in lin.items():
        if any(k in n for k in skip):
            continue
        s = S.get(n)
        wq = q_weight(W0[n] * s[None, :] if s is not None else W0[n])
        md = mode if mode != "mix2" else ("token" if ("down_proj" in n or "o_proj" in n) else "tensor")
        def f(x, wq=wq, s=s, md=md):
            return torch.nn.functional.linear(q_act(x / s if s is not None else x, md), wq)
        mod.forward = f
    p = probs()
    for n, mod in lin.items():
        mod.forward = orig[n]
    d = np.abs(p - ref)
    return {"max_change": round(float(d.max()), 3), "mean_change": round(float(d.mean()), 4), "same_answers": f"{int((p.argmax(1) == ref.argmax(1)).sum())}/{len(tests)}"}

for spec in sys.argv[1:]:
    mode, alpha, *skip = spec.split(":")
    print(json.dumps({"spec": spec, **run(mode, None if alpha == "-" else float(alpha), skip)}), flush=True)
