"""PyTorch + peft LoRA training speed on the CPU, the way train_speed.rs measures medtune:
a LLaMA model built from the SmolLM2-135M shape with random weights, LoRA r=16 alpha=32 on all
linear layers, AdamW lr 2e-4, loss on every token. bitsandbytes has no CPU NF4 training path,
so the frozen base is f32 here (what a user of the Python stack gets on a CPU).

    python3 host/benches/hf_train_speed_cpu.py BATCH SEQ STEPS WARMUP THREADS
"""
import json, resource, sys, time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

batch, seq, steps, warm, threads = (int(a) for a in sys.argv[1:6])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                  vocab_size=49152, rope_theta=100000.0, max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-5)
model = LlamaForCausalLM(cfg)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
g = torch.Generator().manual_seed(1)
losses = []
for i in range(warm + steps):
    if i == warm:
        t = time.time()
    x = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
    loss = model(input_ids=x, labels=x).loss
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    losses.append(loss.item())
dt = time.time() - t
print(json.dumps(dict(engine="transformers+peft", device="cpu", shape="smollm2", mode="lora-f32", batch=batch, seq=seq, steps=steps,
                      sec=round(dt, 3), tokens_per_s=round(batch * seq * steps / dt, 1),
                      peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                      first_loss=round(losses[0], 4), last_loss=round(losses[-1], 4), threads=threads)))
