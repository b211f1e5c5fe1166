"""PyTorch GPT-2 training-step benchmark, the baseline for bench/compare_train.sh (CPU, fp32) and
scripts/gpu_check.sh bench (CUDA: fp32 or bf16 autocast, eager or torch.compile).

Same model and step as `tessera bench train` (launch/cmd_bench.cpp): GPT-2 (pre-LN, learned
positions, GELU-tanh, tied LM head), a fresh random token batch each step, forward, mean
cross-entropy, backward, clip_grad_norm_(1.0), AdamW (decay on 2-D tensors only), zero_grad.
PyTorch gets its best path where it has one: F.scaled_dot_product_attention (flash attention on
a GPU) and the fused CUDA AdamW. Prints a line per step and, last, one JSON object:
{"impl":"pytorch","torch":..,"threads":..,"steps":..,"tokens_per_s":..,"ms_per_step":..,"gflops":..,...}
GFLOP/s use Gpt2Config::train_flops_per_token from model/gpt2.cpp.
Runs on Debian's python3-torch 1.13 too (no scaled_dot_product_attention there: the explicit
masked softmax).
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GPT-2's packed q|k|v projection."""

    def __init__(self, n_embd, n_head, max_seq_len):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        mask = torch.ones(max_seq_len, max_seq_len, dtype=torch.bool).triu(1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        """(B, T, C) -> (B, T, C): softmax(q k^T / sqrt(hs) + causal mask) v per head."""
        b, t, c = x.shape
        hs = c // self.n_head
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, hs).transpose(1, 2) for z in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).reshape(b, t, c))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(self.mask[:t, :t], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.c_proj(y)


class Mlp(nn.Module):
    """c_fc (C -> 4C), GELU-tanh, c_proj (4C -> C)."""

    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        """(B, T, C) -> (B, T, C)."""
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, n_embd, n_head, max_seq_len):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(n_embd, n_head, max_seq_len)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.mlp = Mlp(n_embd)

    def forward(self, x):
        """(B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt2(nn.Module):
    """GPT-2 language model with the LM head tied to the token embedding."""

    def __init__(self, n_layer, n_head, n_embd, vocab, max_seq_len):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(max_seq_len, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head, max_seq_len) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m):
        """GPT-2 init: N(0, 0.02) weights, zero biases (LayerNorm keeps ones/zeros)."""
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, tokens, targets):
        """Mean cross-entropy of targets (B, T) given tokens (B, T)."""
        t = tokens.shape[1]
        x = self.wte(tokens) + self.wpe(torch.arange(t, device=tokens.device))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def train_flops_per_token(n_layer, n_embd, vocab, seq_len):
    """Gpt2Config::train_flops_per_token: 6*(12*L*C^2) + 6*V*C + 12*L*T*C (PaLM appendix B)."""
    matmul_params = n_layer * 12.0 * n_embd * n_embd
    return 6.0 * matmul_params + 6.0 * vocab * n_embd + 12.0 * n_layer * seq_len * n_embd


def main():
    """Parses arguments, trains, times and prints the JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_embd", type=int, default=256)
    ap.add_argument("--n_head", type=int, default=4)
    ap.add_argument("--seq_len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--lr", type=float, default=3e-3, help="configs/tiny.yaml's train.lr")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", default="none", choices=["none", "bf16"],
                    help="bf16: autocast the forward and loss to bf16 (fp32 master weights)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args()
    if args.steps <= 0 or args.warmup < 0:
        ap.error("--steps must be positive and --warmup >= 0")
    if args.n_embd % args.n_head:
        ap.error("--n_embd must be a multiple of --n_head")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = Gpt2(args.n_layer, args.n_head, args.n_embd, args.vocab, args.seq_len).to(device)
    decay = [p for p in model.parameters() if p.dim() == 2]  # Tessera decays matrices/embeddings
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **fused)
    n_params = sum(p.numel() for p in model.parameters())
    forward = torch.compile(model) if args.compile else model
    gen = torch.Generator().manual_seed(args.seed)
    tokens_per_step = args.batch * args.seq_len

    def step():
        """One training step on a fresh random batch; returns the loss."""
        inputs = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=gen)
        targets = torch.randint(0, args.vocab, (args.batch, args.seq_len), generator=gen)
        inputs, targets = inputs.to(device), targets.to(device)
        if args.amp == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = forward(inputs, targets)
        else:
            loss = forward(inputs, targets)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item(), norm.item()

    print(f"pytorch {torch.__version__}: {n_params} params, L={args.n_layer} C={args.n_embd} "
          f"NH={args.n_head} V={args.vocab}, B={args.batch} T={args.seq_len}, "
          f"{torch.get_num_threads()} threads", flush=True)
    for i in range(args.warmup):
        t0 = time.perf_counter()
        loss, norm = step()
        print(f"warmup {i + 1}/{args.warmup}: loss {loss:.4f}, norm {norm:.3f}, "
              f"{(time.perf_counter() - t0) * 1e3:.1f} ms", flush=True)
    start = time.perf_counter()
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss, norm = step()
        dt = time.perf_counter() - t0
        print(f"step {i + 1}/{args.steps}: loss {loss:.4f}, norm {norm:.3f}, {dt * 1e3:.1f} ms, "
              f"{tokens_per_step / dt:.0f} tokens/s", flush=True)
    secs = time.perf_counter() - start

    tok_s = args.steps * tokens_per_step / secs
    flops = train_flops_per_token(args.n_layer, args.n_embd, args.vocab, args.seq_len)
    print(json.dumps({
        "impl": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "steps": args.steps, "tokens_per_s": round(tok_s, 1),
        "ms_per_step": round(secs / args.steps * 1e3, 2), "gflops": round(tok_s * flops / 1e9, 2),
        "params": n_params, "batch": args.batch, "seq_len": args.seq_len,
        "device": args.device, "amp": args.amp, "compile": args.compile,
    }), flush=True)


if __name__ == "__main__":
    main()
