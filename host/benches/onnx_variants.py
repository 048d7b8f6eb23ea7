"""In-process ONNX Runtime latency and fidelity of quantized variants of a `medtune export`:
p50 over the first N test prompts (cut to 512 tokens, 2 threads), the largest and mean change of
a yes/no/maybe probability and the answers kept, against the first model given, and the accuracy.

    python3 onnx_variants.py N F32_ONNX [MORE_ONNX...]

Besides the models given it builds and times, from F32_ONNX: ONNX Runtime's quantize_dynamic
(per channel), the same with down_proj left in f32, and weight-only MatMulNBits at 8 and 4
bits (block 32, int8 compute); VARIANTS=0 times only the models given. Needs onnxruntime, onnx, onnx_ir, tokenizers, numpy."""
import json, os, sys, tempfile, time
import numpy as np, onnx, onnxruntime as ort
from tokenizers import Tokenizer

n, base, more = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
root = os.path.join(os.path.dirname(__file__), "..", "..")
tok = Tokenizer.from_file(os.path.join(os.path.dirname(base), "tokenizer.json"))
records = [json.loads(l) for l in open(os.path.join(root, "work/data/processed/test.jsonl"))][:n]
enc = lambda s: tok.encode(s, add_special_tokens=False).ids
labels = [enc(" yes")[0], enc(" no")[0], enc(" maybe")[0]]

def prompt(r):
    head, tail = enc("Context: "), enc(f"\nQuestion: {r['question']}\nAnswer yes, no or maybe.\nAnswer:")
    return head + enc(r["context"].replace("\n\n", " "))[: 512 - len(head) - len(tail) - 2] + tail

def variants(out):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer
    m = onnx.load(base, load_external_data=False)
    down = [x.name for x in m.graph.node if x.op_type == "MatMul" and x.input[1].endswith("down_proj.weight_t")]
    made = []
    for name, exclude in (("quantize_dynamic per channel", []), ("quantize_dynamic, down_proj f32", down)):
        path = os.path.join(out, f"qd{len(made)}.onnx")
        quantize_dynamic(base, path, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=exclude, op_types_to_quantize=["MatMul"])
        made.append((name, path))
    for bits in (8, 4):
        cfg = DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=True, accuracy_level=4, bits=bits)
        q = MatMulNBitsQuantizer(onnx.load(base), block_size=32, is_symmetric=True, accuracy_level=4, algo_config=cfg)
        q.process()
        path = os.path.join(out, f"nbits{bits}.onnx")
        q.model.save_model_to_file(path, use_external_data_format=False)
        made.append((f"MatMulNBits {bits}-bit", path))
    return made

prompts = [prompt(r) for r in records]
with tempfile.TemporaryDirectory() as out:
    ref = None
    for name, path in [("given", base)] + [("given", p) for p in more] + (variants(out) if os.environ.get("VARIANTS", "1") != "0" else []):
        o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1; o.add_session_config_entry("session.set_denormal_as_zero", "1")
        s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        layers = sum(1 for i in s.get_inputs() if i.name.endswith(".key"))
        def run(ids):
            k = len(ids)
            feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, k), np.int64), "position_ids": np.arange(k, dtype=np.int64)[None]}
            for i in range(layers):
                for kv in ("key", "value"):
                    feed[f"past_key_values.{i}.{kv}"] = np.zeros((1, 3, 0, 64), np.float32)
            return s.run(["logits"], feed)[0][0, -1]
        run(prompts[0])
        lat, ps = [], []
        for ids in prompts:
            t = time.time(); l = run(ids); lat.append(time.time() - t)
            e = np.exp(l[labels] - l[labels].max()); ps.append(e / e.sum())
        ps = np.array(ps)
        ref = ps if ref is None else ref
        print(json.dumps({"model": name if name != "given" else path, "p50_ms": round(float(np.median(lat)) * 1e3, 1),
                          "median_prompt_tokens": int(np.median([len(p) for p in prompts])), "max_probability_change": round(float(np.abs(ps - ref).max()), 4),
                          "mean_probability_change": round(float(np.abs(ps - ref).mean()), 4), "same_answers": f"{int((ps.argmax(1) == ref.argmax(1)).sum())}/{len(ps)}",
                          "accuracy": round(float(np.mean([["yes", "no", "maybe"][a] == r["answer"].strip().lower() for a, r in zip(ps.argmax(1), records)])), 3)}))
