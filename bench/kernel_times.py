#!/usr/bin/env python3
"""GPU time per kernel from Nsight Compute's CSV (`ncu --csv --metrics gpu__time_duration.sum`).

Groups the launches by part of the step (GEMMs, attention, layernorm, ...: PARTS below, by
kernel name), then by kernel name (template arguments and parameters dropped), and prints both
tables sorted by total time: launches, total ms, share of the whole, mean us per launch. ncu
runs each kernel alone with cold caches, so the times are an upper bound on what it takes inside
a step; the shares are what decides the order of work.

  python3 bench/kernel_times.py ncu.csv [--top 30]
"""
import argparse
import csv
import re
import sys
from collections import defaultdict


# (part, pattern on the short kernel name), first match wins; the rest is "other".
PARTS = [
    ("GEMMs (cuBLASLt)", r"^(nvjet|sm\d+_xmma|cutlass|ampere_|sm90_|splitKreduce)|gemm"),
    ("attention", r"_tc_kernel$|^attention_"),
    ("layernorm", r"^layernorm_"),
    ("GELU", r"^gelu_"),
    ("softmax cross-entropy", r"^softmax_xent"),
    ("residual and bias adds", r"^(add|bias_add)_kernel$"),
    ("bias gradients (column sums)", r"^(column_partials|add_partials)_kernel$"),
    ("AdamW and gradient norm", r"^(adamw|norm_partials)_kernel$"),
    ("16-bit conversions", r"^convert_kernel$"),
    ("embedding", r"^embedding_"),
]


def part_of(kernel):
    """The PARTS entry a short kernel name belongs to."""
    for part, pattern in PARTS:
        if re.search(pattern, kernel):
            return part
    return "other"


def print_table(title, per, top):
    """Rows of per (name -> [launches, ns]) by total time, then their sum."""
    total = sum(ns for _, ns in per.values())
    print(f"{title:<48} {'launches':>8} {'ms':>9} {'share':>7} {'us/launch':>10}")
    for name, (n, ns) in sorted(per.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"{name[:48]:<48} {n:>8} {ns / 1e6:>9.3f} {100 * ns / total:>6.1f}% {ns / n / 1e3:>10.1f}")
    print(f"{'all':<48} {sum(n for n, _ in per.values()):>8} {total / 1e6:>9.3f}")


def short_name(name):
    """The kernel's own name: no return type, namespaces, template arguments or parameters."""
    if name.endswith(")"):  # parameters: back to the matching parenthesis
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    depth, out = 0, []
    for ch in name:  # template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    name = "".join(out).replace("(anonymous namespace)::", "")
    return name.split()[-1].split("::")[-1] if name.split() else name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prints its own messages before the CSV
    rows = list(csv.DictReader(lines))
    if not rows:
        sys.exit(f"{args.csv}: no kernel rows (did ncu profile anything?)")
    per = defaultdict(lambda: [0, 0.0])
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(r["Metric Value"].replace(",", ""))
        unit = r.get("Metric Unit", "nsecond")
        ns = value * {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9}.get(unit, 1)
        p = per[short_name(r["Kernel Name"])]
        p[0] += 1
        p[1] += ns
    parts = defaultdict(lambda: [0, 0.0])
    for name, (n, ns) in per.items():
        part = parts[part_of(name)]
        part[0] += n
        part[1] += ns
    print_table("part", parts, len(parts))
    print()
    print_table("kernel", per, args.top)


if __name__ == "__main__":
    main()
