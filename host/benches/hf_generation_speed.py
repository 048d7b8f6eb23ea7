"""transformers' generation speed measured like host/benches/generation_speed.rs: prompt
tokens/s (one forward pass) and greedy tokens/s with the KV cache, median of 5 runs.

    python3 host/benches/hf_generation_speed.py GGUF_DIR GGUF_FILE [PROMPT_TOKENS] [NEW_TOKENS] [THREADS]
"""
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

folder, gguf = sys.argv[1], sys.argv[2]
prompt_len = int(sys.argv[3]) if len(sys.argv) > 3 else 256
new_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 64
torch.set_num_threads(int(sys.argv[5]) if len(sys.argv) > 5 else 2)
torch.set_grad_enabled(False)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
ids = torch.tensor([[100 + (i * 7919) % 40000 for i in range(prompt_len)]])
model(ids)  # warm-up
prefill, decode = [], []
for _ in range(5):
    t = time.perf_counter()
    out = model(ids, use_cache=True)
    prefill.append(prompt_len / (time.perf_counter() - t))
    past, nxt = out.past_key_values, torch.tensor([[100]])
    t = time.perf_counter()
    for _ in range(new_tokens):
        out = model(nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
    decode.append(new_tokens / (time.perf_counter() - t))
print(f"transformers {torch.__version__} {gguf} ({torch.get_num_threads()} threads): prompt {prompt_len} tokens "
      f"{statistics.median(prefill):.0f} tokens/s, generation {new_tokens} tokens {statistics.median(decode):.1f} tokens/s")
