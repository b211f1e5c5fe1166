#!/usr/bin/env python3
"""The JSON lines of bench_attention_cuda and bench/pytorch_attention.py (on standard input, in
any order) as one table a pass: each engine and variant's milliseconds and TFLOP/s, and how many
times faster than it the fastest Tessera variant is (> 1: Tessera faster). Lines that are not
JSON, and backends PyTorch could not use, are listed after the tables."""
import json
import sys


def main():
    rows, other = [], []
    for text in sys.stdin:
        text = text.strip()
        if not text:
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and "engine" in row:
            rows.append(row)
        else:
            other.append(text)
    timed = [r for r in rows if "ms" in r]
    versions = {(r["torch"], r["cudnn"]) for r in rows if "torch" in r}
    for torch_version, cudnn_version in sorted(versions, key=str):
        print(f"PyTorch {torch_version}, cuDNN {cudnn_version}")
    for part in ("forward", "backward"):
        lines = [r for r in timed if r.get("pass") == part]
        ours = [r["ms"] for r in lines if r["engine"] == "tessera"]
        if not lines:
            continue
        best = min(ours) if ours else None
        print(f"{part}:")
        for r in lines:
            name = r["engine"] + (f" ({r['variant']})" if "variant" in r else "")
            extra = "".join(f"  {k} {r[k]}" for k in ("same_as_first", "max_relative_difference")
                            if k in r)
            ratio = f"  best Tessera's speed-up {r['ms'] / best:.2f}x" if best else ""
            print(f"  {name:42s} {r['ms']:8.3f} ms {r['tflops']:6.1f} TFLOP/s{ratio}{extra}")
    for r in rows:
        if "unavailable" in r:
            print(f"{r['engine']}: unavailable: {r['unavailable']}")
    for text in other:
        print(text)


if __name__ == "__main__":
    main()
