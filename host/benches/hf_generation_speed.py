"""transformers' generation speed measured like host/benches/generation_speed.rs: prompt
tokens/s (one forward pass) and greedy tokens/s with the KV cache, median of 5 runs.

    python3 host/benches/hf_generation_speed.py GGUF_DIR GGUF_FILE [PROMPT_TOKENS] [NEW_TOKENS] [THREADS]
    python3 host/benches/hf_generation_speed.py random:smollm2 cuda [PROMPT_TOKENS] [NEW_TOKENS]

The second form builds SmolLM2-135M's shape (or llama2-7b's) with random f32 weights on the
given device, like `generation_speed random:smollm2` does.
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
if folder.startswith("random:"):
    from transformers import LlamaConfig, LlamaForCausalLM
    shapes = {
        "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                        num_key_value_heads=3, vocab_size=49152, rms_norm_eps=1e-5, rope_theta=100000.0,
                        max_position_embeddings=8192, tie_word_embeddings=True),
        "llama2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                          num_key_value_heads=32, vocab_size=32000, rms_norm_eps=1e-5, max_position_embeddings=4096),
    }
    device = gguf
    model = LlamaForCausalLM(LlamaConfig(**shapes[folder.split(":", 1)[1]])).to(device=device, dtype=torch.float32).eval()
else:
    device = "cpu"
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval()
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
ids = torch.tensor([[100 + (i * 7919) % 30000 for i in range(prompt_len)]], device=device)
model(ids)  # warm-up
prefill, decode = [], []
for _ in range(5):
    sync()
    t = time.perf_counter()
    out = model(ids, use_cache=True)
    sync()
    prefill.append(prompt_len / (time.perf_counter() - t))
    past, nxt = out.past_key_values, torch.tensor([[100]], device=device)
    t = time.perf_counter()
    for _ in range(new_tokens):
        out = model(nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1:].argmax(-1)
    sync()
    decode.append(new_tokens / (time.perf_counter() - t))
import transformers  # noqa: E402
print(f"transformers {transformers.__version__} (torch {torch.__version__}) {folder} on {device}, {torch.get_num_threads()} CPU threads: prompt {prompt_len} tokens "
      f"{statistics.median(prefill):.0f} tokens/s, generation {new_tokens} tokens {statistics.median(decode):.1f} tokens/s")
