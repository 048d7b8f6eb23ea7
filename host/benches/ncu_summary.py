"""GPU time by kernel from an Nsight Compute CSV (one metric: gpu__time_duration.sum), the
cuBLAS products folded into one line:

    ncu --metrics gpu__time_duration.sum --csv --launch-skip 16000 --launch-count 16000 \\
        train_speed llama2-7b 4x512 1 1 --bf16 > ncu.csv
    python3 ncu_summary.py ncu.csv"""
import collections, csv, re, sys

rows = list(csv.reader(open(sys.argv[1])))
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]
k, v, u = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
ms, count = collections.Counter(), collections.Counter()
for r in rows[hdr + 1:]:
    if len(r) <= v:
        continue
    name = "cuBLAS products" if ("gemm" in r[k] or "nvjet" in r[k]) else re.sub(r"\(.*", "", r[k])
    ms[name] += float(r[v].replace(",", "")) * scale[r[u]]
    count[name] += 1
total = sum(ms.values())
print(f"{sum(count.values())} kernels, {total:.1f} ms")
for name, t in ms.most_common(20):
    print(f"{t:8.1f} ms {100 * t / total:5.1f}% {count[name]:6d}  {name}")
