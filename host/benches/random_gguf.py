"""GGUF files of a LLaMA shape with random weights, for serving benchmarks (speed does not
depend on the values): `medtune serve` and llama.cpp's `llama-server` load the same file.

    python3 random_gguf.py model --shape llama2-7b|smollm2 --tokenizer TOK.gguf OUT.gguf
                                 [--dtype f16|bf16] [--layers N] [--seed S] [--gguf-py DIR]
    python3 random_gguf.py tokenizer SRC.gguf OUT.gguf [--gguf-py DIR]

model: architecture `llama`, tensors named and laid out as llama.cpp's convert_hf_to_gguf.py
writes them (token_embd, blk.N.attn_norm/attn_q/attn_k/attn_v/attn_output/ffn_norm/ffn_gate/
ffn_up/ffn_down, output_norm, and output unless the shape ties it to token_embd); matrices in
F16 (or BF16), norms in F32 (ones), as the convert script stores them. The tokenizer metadata
(every `tokenizer.*` key, chat template included) is copied byte for byte from TOK.gguf, and
the vocabulary size is its token count. llama.cpp permutes the q/k rows of `llama` files
relative to Hugging Face's; with random weights that makes no difference. Matrix values:
normal, std 0.02, taken as slices of one 64 MiB pool at random offsets, written in chunks, so
memory stays bounded and a 7B file (~13.5 GB) is written at disk speed. --layers N overrides
the shape's layer count (a tiny file for checks).

tokenizer: a metadata-only GGUF (no tensors) holding SRC's `tokenizer.*` keys (and its
`general.*` keys but the file type), e.g. from SmolLM2-135M-Instruct.Q4_1.gguf.

The `gguf` package: llama.cpp's gguf-py, from --gguf-py DIR or $GGUF_PY (either the unpacked
llama.cpp folder or its gguf-py folder), else an installed `gguf` (PyPI). Needs numpy only
(PyYAML, which gguf imports for model cards, is stubbed when missing)."""
import argparse
import os
import sys
import time
import types

import numpy as np

SHAPES = {
    # hidden, layers, heads, kv heads, ffn, rope theta, rms eps, context, tied embeddings
    "llama2-7b": dict(hidden=4096, layers=32, heads=32, kv_heads=32, ffn=11008, rope_theta=10000.0, eps=1e-5, context=4096, tied=False),
    "smollm2": dict(hidden=576, layers=30, heads=9, kv_heads=3, ffn=1536, rope_theta=100000.0, eps=1e-5, context=8192, tied=True),
}
POOL = 1 << 25  # values in the random pool (64 MiB of 16-bit values)
CHUNK = 1 << 24  # values written at once


def import_gguf(where):
    where = where or os.environ.get("GGUF_PY")
    if where:
        for d in (os.path.join(where, "gguf-py"), where):
            if os.path.isdir(os.path.join(d, "gguf")):
                sys.path.insert(0, d)
                break
        else:
            sys.exit(f"no gguf package under {where} (expected {where}/gguf-py/gguf or {where}/gguf)")
    try:
        import yaml  # noqa: F401  (gguf.metadata imports it; only model cards use it)
    except ImportError:
        sys.modules["yaml"] = types.ModuleType("yaml")
    try:
        import gguf
    except ImportError:
        sys.exit("no gguf package: pass --gguf-py DIR (llama.cpp's gguf-py) or set GGUF_PY, or pip install gguf")
    return gguf


def copy_fields(gguf, reader, writer, keep):
    """Copies the reader's fields whose key passes `keep`, strings as their raw bytes."""
    T = gguf.GGUFValueType
    n = 0
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or not keep(key):
            continue
        main = T(f.types[0])
        if main == T.ARRAY:
            sub = T(f.types[-1])
            if len(f.types) != 2:
                sys.exit(f"{key}: nested arrays are not copied")
            if sub == T.STRING:
                val = [bytes(f.parts[i]) for i in f.data]
            else:
                val = [f.parts[i].tolist()[0] for i in f.data]
            writer.add_key_value(key, val, T.ARRAY, sub_type=sub)
        elif main == T.STRING:
            writer.add_key_value(key, bytes(f.parts[f.data[0]]), T.STRING)
        else:
            writer.add_key_value(key, f.parts[f.data[0]].tolist()[0], main)
        n += 1
    return n


def tokenizer_only(gguf, src, out):
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(out, arch)
    general = lambda k: k.startswith("general.") and k not in ("general.architecture", "general.file_type", "general.quantization_version")
    n = copy_fields(gguf, reader, writer, lambda k: k.startswith("tokenizer.") or general(k))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    print(f"{out}: {n} keys of {src} ({len(reader.fields['tokenizer.ggml.tokens'].data)} tokens), no tensors, {os.path.getsize(out)} bytes")


def model(gguf, a):
    s = dict(SHAPES[a.shape])
    if a.layers is not None:
        s["layers"] = a.layers
    tok = gguf.GGUFReader(a.tokenizer)
    if "tokenizer.ggml.tokens" not in tok.fields:
        sys.exit(f"{a.tokenizer} has no tokenizer.ggml.tokens")
    vocab = len(tok.fields["tokenizer.ggml.tokens"].data)
    h, hd = s["hidden"], s["hidden"] // s["heads"]
    bf16 = a.dtype == "bf16"

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_string("general.type", "model")
    w.add_string("general.name", f"random {a.shape}" + (f" {s['layers']} layers" if a.layers is not None else ""))
    w.add_uint32("llama.block_count", s["layers"])
    w.add_uint32("llama.context_length", s["context"])
    w.add_uint32("llama.embedding_length", h)
    w.add_uint32("llama.feed_forward_length", s["ffn"])
    w.add_uint32("llama.attention.head_count", s["heads"])
    w.add_uint32("llama.attention.head_count_kv", s["kv_heads"])
    w.add_float32("llama.rope.freq_base", s["rope_theta"])
    w.add_float32("llama.attention.layer_norm_rms_epsilon", s["eps"])
    w.add_uint32("general.file_type", 32 if bf16 else 1)  # LlamaFileType MOSTLY_BF16 / MOSTLY_F16
    w.add_uint32("llama.vocab_size", vocab)
    w.add_uint32("llama.rope.dimension_count", hd)
    copy_fields(gguf, tok, w, lambda k: k.startswith("tokenizer."))
    w.add_uint32("general.quantization_version", 2)

    # (name, numpy-order shape, is a matrix); norms are F32 ones
    tensors = [("token_embd.weight", (vocab, h), True)]
    for i in range(s["layers"]):
        b = f"blk.{i}."
        tensors += [
            (b + "attn_norm.weight", (h,), False),
            (b + "attn_q.weight", (s["heads"] * hd, h), True),
            (b + "attn_k.weight", (s["kv_heads"] * hd, h), True),
            (b + "attn_v.weight", (s["kv_heads"] * hd, h), True),
            (b + "attn_output.weight", (h, s["heads"] * hd), True),
            (b + "ffn_norm.weight", (h,), False),
            (b + "ffn_gate.weight", (s["ffn"], h), True),
            (b + "ffn_up.weight", (s["ffn"], h), True),
            (b + "ffn_down.weight", (h, s["ffn"]), True),
        ]
    tensors.append(("output_norm.weight", (h,), False))
    if not s["tied"]:
        tensors.append(("output.weight", (vocab, h), True))

    Q = gguf.GGMLQuantizationType
    for name, shape, matrix in tensors:
        n = int(np.prod(shape))
        if not matrix:
            w.add_tensor_info(name, shape, np.dtype(np.float32), n * 4)
        elif bf16:
            w.add_tensor_info(name, shape, np.dtype(np.uint16), n * 2, raw_dtype=Q.BF16)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float16), n * 2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    rng = np.random.default_rng(a.seed)
    pool = (rng.standard_normal(POOL, dtype=np.float32) * 0.02)
    pool = (pool.view(np.uint32) >> 16).astype(np.uint16) if bf16 else pool.astype(np.float16)
    pool = np.concatenate([pool, pool])  # a slice of POOL values may start anywhere in the first half
    fout = w.fout[0]
    align = w.data_alignment
    pad = lambda k: fout.write(b"\0" * ((-k) % align))
    t, total = time.time(), 0
    for name, shape, matrix in tensors:
        n = int(np.prod(shape))
        pad(fout.tell())
        if matrix:
            left = n
            while left:
                k = min(left, CHUNK)
                off = int(rng.integers(0, POOL))
                pool[off:off + k].tofile(fout)
                left -= k
            nbytes = n * 2
        else:
            np.ones(n, dtype=np.float32).tofile(fout)
            nbytes = n * 4
        pad(nbytes)
        total += nbytes
    w.close()
    params = sum(int(np.prod(sh)) for _, sh, _ in tensors)
    print(f"{a.out}: {a.shape} ({s['layers']} layers, vocab {vocab}, {params / 1e9:.3f} B parameters, {a.dtype}), "
          f"{len(tensors)} tensors, {os.path.getsize(a.out) / 2**30:.2f} GiB in {time.time() - t:.1f} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model", help="a random-weight GGUF of a LLaMA shape")
    m.add_argument("--shape", choices=sorted(SHAPES), required=True)
    m.add_argument("--tokenizer", required=True, help="a GGUF whose tokenizer.* keys are copied")
    m.add_argument("--dtype", choices=["f16", "bf16"], default="f16")
    m.add_argument("--layers", type=int, help="override the shape's layer count")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--gguf-py", help="llama.cpp's folder (or its gguf-py); default $GGUF_PY, else an installed gguf")
    m.add_argument("out")
    t = sub.add_parser("tokenizer", help="a metadata-only GGUF with another GGUF's tokenizer")
    t.add_argument("src")
    t.add_argument("out")
    t.add_argument("--gguf-py")
    a = p.parse_args()
    gguf = import_gguf(a.gguf_py)
    if a.cmd == "tokenizer":
        tokenizer_only(gguf, a.src, a.out)
    else:
        model(gguf, a)


if __name__ == "__main__":
    main()
