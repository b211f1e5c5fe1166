#!/usr/bin/env python3
"""PyTorch's causal SDPA alone on a GPU, at the shape bench/attention_cuda.cu times Tessera's
attention at (default GPT-2 124M's: B 16, 12 heads of 64, T 1024, bf16), once for each SDPA
backend this PyTorch has (FlashAttention-2, cuDNN, memory-efficient). q, k and v are (B, T, NH,
HS) tensors seen as (B, NH, T, HS), as Tessera's qkv rows hold them. One JSON line a measurement:
milliseconds a call (mean of --reps after 3 warm-up calls, CUDA events) and TFLOP/s by
FlashAttention's count (forward 4·HS per causal (query, key) pair, backward 2.5 times that).
The backward is torch.autograd.grad of the output, dO given: SDPA's backward kernels only.
--backends picks some of them (run with cuDNN's and cudnn-frontend's logging on, a small cuDNN
run records the operation graph PyTorch builds for it)."""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(f, reps):
    for _ in range(3):
        f()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        f()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / reps


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--backends", default="flash,cudnn,efficient",
                        help="comma-separated, of flash, cudnn, efficient")
    a = parser.parse_args()
    b, nh, t, hs = a.batch, a.heads, a.seq, a.head_size
    pairs = t * (t + 1) / 2 * b * nh
    flops = {"forward": 4.0 * hs * pairs, "backward": 10.0 * hs * pairs}
    gen = torch.Generator(device="cuda").manual_seed(20261126)

    def leaf():
        return torch.randn(b, t, nh, hs, device="cuda", dtype=torch.bfloat16, generator=gen,
                           requires_grad=True)

    q, k, v = leaf(), leaf(), leaf()
    views = [x.transpose(1, 2) for x in (q, k, v)]
    known = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION",
             "efficient": "EFFICIENT_ATTENTION"}
    names = a.backends.split(",")
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)} (takes {', '.join(known)})")
    for name in names:
        attr = known[name]
        line = {"engine": f"pytorch-{name}", "torch": torch.__version__,
                "cudnn": torch.backends.cudnn.version(), "batch": b, "heads": nh, "seq": t,
                "head_size": hs}
        backend = getattr(SDPBackend, attr, None)
        if backend is None:
            print(json.dumps({**line, "unavailable": f"no SDPBackend.{attr} in this PyTorch"}))
            continue
        try:
            with sdpa_kernel(backend):
                out = F.scaled_dot_product_attention(*views, is_causal=True)
                # dO laid out as this backend lays out O, so that its backward copies neither.
                dout = torch.empty_like(out).normal_(generator=gen)
                ms = {"forward": time_ms(
                          lambda: F.scaled_dot_product_attention(*views, is_causal=True), a.reps),
                      "backward": time_ms(
                          lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True),
                          a.reps)}
        except RuntimeError as e:  # the backend refuses this shape or GPU
            reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
            print(json.dumps({**line, "unavailable": reason}))
            continue
        for part in ("forward", "backward"):
            print(json.dumps({**line, "pass": part, "ms": round(ms[part], 4),
                              "tflops": round(flops[part] / (ms[part] * 1e-3) / 1e12, 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
