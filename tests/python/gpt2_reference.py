"""Float64 PyTorch reference for Tessera's GPT-2 (read by tests/trainer/test_parity_torch.cpp).

usage: gpt2_reference.py DIR | --self-test

DIR holds config.json (n_layer, n_head, n_embd, vocab_size, n_positions, lr, beta1, beta2, eps,
weight_decay, grad_clip, steps), model.safetensors (F32 weights under Tessera's Hugging Face
GPT2LMHeadModel names, e.g. "transformer.h.0.attn.c_attn.weight"; Conv1D layout (in, out); the
LM head is tied to transformer.wte.weight) and batch.safetensors (inputs, targets: I32 (B, T)).
Writes DIR/reference.safetensors (F32):
  logits (B*T, V)  at the initial weights, rows in (b, t) order
  loss (1,)        mean cross-entropy at the initial weights
  grad.<name>      gradient of that mean loss for every parameter
  losses (steps,)  the loss before each of `steps` AdamW updates on the same batch
  final.<name>     every parameter after those updates
All math is float64; only the file is float32. Plain PyTorch (no transformers), same model as
model/gpt2.cpp: pre-LN blocks, learned positions, GELU-tanh, LayerNorm eps 1e-5, causal attention
scaled by 1/sqrt(head_dim), final ln_f, logits = h @ wte.T.
"""

import json
import math
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402

LN_EPS = 1e-5
BLOCK_PARAMS = (  # suffix, shape as a function of C (model/gpt2_block.cpp register_params)
    ("ln_1.weight", lambda c: (c,)),
    ("ln_1.bias", lambda c: (c,)),
    ("attn.c_attn.weight", lambda c: (c, 3 * c)),
    ("attn.c_attn.bias", lambda c: (3 * c,)),
    ("attn.c_proj.weight", lambda c: (c, c)),
    ("attn.c_proj.bias", lambda c: (c,)),
    ("ln_2.weight", lambda c: (c,)),
    ("ln_2.bias", lambda c: (c,)),
    ("mlp.c_fc.weight", lambda c: (c, 4 * c)),
    ("mlp.c_fc.bias", lambda c: (4 * c,)),
    ("mlp.c_proj.weight", lambda c: (4 * c, c)),
    ("mlp.c_proj.bias", lambda c: (c,)),
)


def param_shapes(cfg):
    """Every parameter's name and shape, in model/gpt2.cpp's registration order."""
    c = cfg["n_embd"]
    shapes = {"transformer.wte.weight": (cfg["vocab_size"], c),
              "transformer.wpe.weight": (cfg["n_positions"], c)}
    for layer in range(cfg["n_layer"]):
        for suffix, shape in BLOCK_PARAMS:
            shapes[f"transformer.h.{layer}.{suffix}"] = shape(c)
    shapes["transformer.ln_f.weight"] = (c,)
    shapes["transformer.ln_f.bias"] = (c,)
    return shapes


def decays(name, p):
    """Tessera's rule (core/parameters.h): AdamW decays matrices and embeddings, i.e. 2-D tensors."""
    return p.dim() == 2


def gelu_tanh(x):
    """GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def layer_norm(x, w, b):
    """LayerNorm over the last dimension with biased variance and eps 1e-5."""
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * w + b


def causal_attention(qkv, n_head):
    """softmax(q k^T / sqrt(hs) + causal mask) v for qkv (B, T, 3C) packed q|k|v -> (B, T, C)."""
    bsz, t, c3 = qkv.shape
    c = c3 // 3
    hs = c // n_head
    q, k, v = qkv.split(c, dim=-1)
    q, k, v = (z.view(bsz, t, n_head, hs).transpose(1, 2) for z in (q, k, v))  # (B, NH, T, hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)
    mask = torch.ones(t, t, dtype=torch.bool, device=qkv.device).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.transpose(1, 2).reshape(bsz, t, c)


def forward(params, tokens, cfg):
    """Logits (B, T, V) of GPT-2 on tokens (B, T) int64; params maps Tessera names to tensors."""
    t = tokens.shape[1]
    wte = params["transformer.wte.weight"]
    x = wte[tokens] + params["transformer.wpe.weight"][:t]
    for layer in range(cfg["n_layer"]):
        p = lambda s: params[f"transformer.h.{layer}.{s}"]  # noqa: E731
        h = layer_norm(x, p("ln_1.weight"), p("ln_1.bias"))
        qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")  # Conv1D: (in, out)
        x = x + causal_attention(qkv, cfg["n_head"]) @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = layer_norm(x, p("ln_2.weight"), p("ln_2.bias"))
        h = gelu_tanh(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"))
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = layer_norm(x, params["transformer.ln_f.weight"], params["transformer.ln_f.bias"])
    return x @ wte.t()


def mean_loss(logits, targets):
    """Mean cross-entropy over all B*T positions."""
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def load_params(path, cfg):
    """Float64 leaf tensors for the weights in `path`; raises on missing, extra or misshapen ones."""
    arrays = safetensors_np.load(path)
    expected = param_shapes(cfg)
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: missing {missing}, unexpected {extra}")
    params = {}
    for name, shape in expected.items():
        if tuple(arrays[name].shape) != shape:
            raise ValueError(f"{path}: {name} has shape {arrays[name].shape}, expected {shape}")
        params[name] = torch.tensor(arrays[name], dtype=torch.float64, requires_grad=True)
    return params


def make_optimizer(params, cfg):
    """torch.optim.AdamW with decay only where Tessera decays (2-D tensors)."""
    decay = [p for n, p in params.items() if decays(n, p)]
    no_decay = [p for n, p in params.items() if not decays(n, p)]
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                             eps=cfg["eps"])


def train(params, inputs, targets, cfg):
    """Runs cfg['steps'] clipped AdamW steps on one batch; returns the loss before each step."""
    opt = make_optimizer(params, cfg)
    losses = []
    for _ in range(cfg["steps"]):
        opt.zero_grad(set_to_none=True)
        loss = mean_loss(forward(params, inputs, cfg), targets)
        loss.backward()
        if cfg["grad_clip"] > 0:  # Tessera: grad_clip <= 0 disables clipping
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg["grad_clip"])
        opt.step()
        losses.append(loss.item())
    return losses


def run(directory):
    """Computes the reference for the files in `directory` and writes reference.safetensors."""
    with open(os.path.join(directory, "config.json")) as f:
        cfg = json.load(f)
    params = load_params(os.path.join(directory, "model.safetensors"), cfg)
    batch = safetensors_np.load(os.path.join(directory, "batch.safetensors"))
    inputs = torch.from_numpy(batch["inputs"].astype(np.int64))
    targets = torch.from_numpy(batch["targets"].astype(np.int64))

    logits = forward(params, inputs, cfg)
    loss = mean_loss(logits, targets)
    loss.backward()
    f32 = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
    out = {"logits": f32(logits.reshape(-1, cfg["vocab_size"])),
           "loss": np.array([loss.item()], dtype=np.float32)}
    for name, p in params.items():
        out["grad." + name] = f32(p.grad)

    losses = train(params, inputs, targets, cfg)
    out["losses"] = np.array(losses, dtype=np.float32)
    for name, p in params.items():
        out["final." + name] = f32(p)
    safetensors_np.save(os.path.join(directory, "reference.safetensors"), out,
                        {"generator": "tests/python/gpt2_reference.py"})


# ---------------------------------------------------------------------------------------------
# Self-test


def _check(cond, what):
    """Raises AssertionError with `what` unless cond."""
    if not cond:
        raise AssertionError(what)
    print("ok:", what)


def _test_safetensors(tmp):
    """Round trip of every dtype, metadata, header padding and tight packing."""
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal((2, 2, 2)),
        "f16": rng.standard_normal(7).astype(np.float16),
        "i32": rng.integers(-1000, 1000, (4, 3)).astype(np.int32),
        "i8": rng.integers(-128, 128, 9).astype(np.int8),
        "u8": rng.integers(0, 256, 5).astype(np.uint8),
        "u16": rng.integers(0, 65536, 3).astype(np.uint16),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    bf16_values = np.array([1.0, -2.5, 3.140625, 0.0, 1e30], dtype=np.float32)
    path = os.path.join(tmp, "t.safetensors")
    safetensors_np.save(path, {**tensors, "bf16": safetensors_np.BF16(bf16_values)},
                        {"format": "pt", "note": "ünïcode"})
    loaded, meta = safetensors_np.load(path, with_metadata=True)
    _check(meta == {"format": "pt", "note": "ünïcode"}, "safetensors metadata round trip")
    for name, a in tensors.items():
        b = loaded[name]
        _check(b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b),
               f"safetensors {name} round trip")
    bf = loaded["bf16"]
    _check(bf.dtype == np.float32 and np.allclose(bf, bf16_values, rtol=2 ** -8),
           "safetensors BF16 -> float32 within bf16 precision")
    _check(bf[2] == 3.140625, "BF16 exactly representable value is exact")

    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    text = raw[8:8 + n]
    _check(n % 8 == 0 and text.rstrip(b" ").endswith(b"}") and len(text) - len(text.rstrip(b" ")) < 8,
           "header padded with fewer than 8 spaces to a multiple of 8")
    names = [k for k in header if k != "__metadata__"]
    pos = 0
    for k in names:
        begin, end = header[k]["data_offsets"]
        _check(begin == pos, f"{k} packed right after the previous tensor")
        pos = end
    _check(8 + n + pos == len(raw), "data buffer ends at the last tensor")
    _check(header["bf16"]["dtype"] == "BF16" and header["i8"]["dtype"] == "I8", "dtype names")

    # A file as Tessera writes it (no metadata, names sorted) must load too.
    safetensors_np.save(path, {"a": tensors["i32"], "b": tensors["f32"]})
    _check(np.array_equal(safetensors_np.load(path)["b"], tensors["f32"]), "no-metadata file")


def _tiny_cfg():
    """A tiny config for gradient checks and the end-to-end run."""
    return {"n_layer": 2, "n_head": 2, "n_embd": 8, "vocab_size": 11, "n_positions": 6,
            "lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1,
            "grad_clip": 1.0, "steps": 4}


def _random_params(cfg, gen):
    """Random float64 weights (norm weights near 1) under Tessera's names."""
    params = {}
    for name, shape in param_shapes(cfg).items():
        p = 0.3 * torch.randn(*shape, generator=gen, dtype=torch.float64)
        if ".ln_" in name and name.endswith("weight"):
            p += 1.0
        params[name] = p.requires_grad_(True)
    return params


def _test_gradients():
    """torch.autograd.gradcheck on the attention and on the whole model's loss."""
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 5, 3 * 8, generator=gen, dtype=torch.float64, requires_grad=True)
    _check(torch.autograd.gradcheck(lambda x: causal_attention(x, 2), (qkv,)),
           "gradcheck of causal attention")

    # Causality: changing a later position must not change earlier outputs.
    out = causal_attention(qkv.detach(), 2)
    qkv2 = qkv.detach().clone()
    qkv2[:, 3:] += 1.0
    out2 = causal_attention(qkv2, 2)
    _check(torch.equal(out[:, :3], out2[:, :3]) and not torch.equal(out[:, 3:], out2[:, 3:]),
           "attention is causal")

    x = torch.randn(3, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, generator=gen, dtype=torch.float64)
    b = torch.randn(8, generator=gen, dtype=torch.float64)
    _check(torch.allclose(layer_norm(x, w, b), torch.nn.functional.layer_norm(x, (8,), w, b, LN_EPS)),
           "layer_norm matches torch.nn.functional.layer_norm")
    _check(torch.allclose(gelu_tanh(x), torch.nn.functional.gelu(x, approximate="tanh")),
           "gelu_tanh matches torch's tanh GELU")

    cfg = _tiny_cfg()
    params = _random_params(cfg, gen)
    names = list(params)
    tokens = torch.randint(0, cfg["vocab_size"], (2, 5), generator=gen)
    targets = torch.randint(0, cfg["vocab_size"], (2, 5), generator=gen)

    def loss_of(*ps):
        """Mean loss as a function of every parameter."""
        return mean_loss(forward(dict(zip(names, ps)), tokens, cfg), targets)

    _check(torch.autograd.gradcheck(loss_of, tuple(params.values()), eps=1e-6, atol=1e-7),
           "gradcheck of the whole model's mean loss")


def _adamw_like_tessera(params, grads, state, t, cfg):
    """kernels/adamw.cpp + trainer/optimizer.cpp in numpy float64 (clip folded into the step)."""
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    scale = min(1.0, cfg["grad_clip"] / (norm + 1e-6)) if cfg["grad_clip"] > 0 else 1.0
    bc1 = 1.0 - cfg["beta1"] ** t
    bc2 = 1.0 - cfg["beta2"] ** t
    for name, p in params.items():
        g = grads[name] * scale
        m, v = state.setdefault(name, (np.zeros_like(p), np.zeros_like(p)))
        m = cfg["beta1"] * m + (1 - cfg["beta1"]) * g
        v = cfg["beta2"] * v + (1 - cfg["beta2"]) * g * g
        state[name] = (m, v)
        wd = cfg["weight_decay"] if p.ndim == 2 else 0.0
        params[name] = p * (1 - cfg["lr"] * wd) - cfg["lr"] / bc1 * m / (np.sqrt(v) / math.sqrt(bc2) + cfg["eps"])


def _test_end_to_end(tmp):
    """Writes a DIR like the C++ test, runs run(), and checks the output against a re-derivation."""
    cfg = _tiny_cfg()
    gen = torch.Generator().manual_seed(1)
    params = _random_params(cfg, gen)
    weights = {n: p.detach().numpy().astype(np.float32) for n, p in sorted(params.items())}
    bsz, t = 3, cfg["n_positions"]
    batch = {"inputs": np.random.default_rng(2).integers(0, cfg["vocab_size"], (bsz, t)).astype(np.int32),
             "targets": np.random.default_rng(3).integers(0, cfg["vocab_size"], (bsz, t)).astype(np.int32)}
    safetensors_np.save(os.path.join(tmp, "model.safetensors"), weights, {"format": "pt"})
    safetensors_np.save(os.path.join(tmp, "batch.safetensors"), batch)
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f)
    run(tmp)
    ref = safetensors_np.load(os.path.join(tmp, "reference.safetensors"))

    expected = {"logits", "loss", "losses"} | {p + n for n in weights for p in ("grad.", "final.")}
    _check(set(ref) == expected, "reference has logits, loss, losses, grad.* and final.*")
    _check(all(a.dtype == np.float32 for a in ref.values()), "reference is all F32")
    _check(ref["logits"].shape == (bsz * t, cfg["vocab_size"]), "logits are (B*T, V)")
    _check(ref["loss"].shape == (1,) and ref["losses"].shape == (cfg["steps"],), "loss shapes")

    # Logits row b*T + t must be position (b, t): recompute one sequence alone.
    p64 = {n: torch.tensor(w, dtype=torch.float64) for n, w in weights.items()}
    one = forward(p64, torch.from_numpy(batch["inputs"][1:2].astype(np.int64)), cfg)[0]
    _check(np.allclose(ref["logits"][t:2 * t], one.numpy(), rtol=1e-5, atol=1e-6),
           "logits rows are in (b, t) order")

    # Central differences of the loss for a few coordinates.
    inputs = torch.from_numpy(batch["inputs"].astype(np.int64))
    targets = torch.from_numpy(batch["targets"].astype(np.int64))
    for name in ("transformer.wte.weight", "transformer.h.1.attn.c_attn.weight",
                 "transformer.h.0.ln_1.bias"):
        idx = (0,) * len(weights[name].shape)
        h = 1e-6
        p64[name][idx] += h
        lp = mean_loss(forward(p64, inputs, cfg), targets).item()
        p64[name][idx] -= 2 * h
        lm = mean_loss(forward(p64, inputs, cfg), targets).item()
        p64[name][idx] += h
        _check(abs((lp - lm) / (2 * h) - ref["grad." + name][idx]) < 1e-5,
               f"grad.{name}{list(idx)} matches central differences")

    # torch.optim.AdamW + clip_grad_norm_ must equal Tessera's AdamW formula and decay rule.
    ws = {n: w.astype(np.float64) for n, w in weights.items()}
    state, losses = {}, []
    for step in range(1, cfg["steps"] + 1):
        ps = {n: torch.tensor(w, requires_grad=True) for n, w in ws.items()}
        loss = mean_loss(forward(ps, inputs, cfg), targets)
        loss.backward()
        losses.append(loss.item())
        _adamw_like_tessera(ws, {n: p.grad.numpy() for n, p in ps.items()}, state, step, cfg)
    _check(np.allclose(ref["losses"], losses, rtol=1e-6), "losses match Tessera-style AdamW")
    for n, w in ws.items():
        _check(np.allclose(ref["final." + n], w, rtol=1e-5, atol=1e-7),
               f"final.{n} matches Tessera-style AdamW")
    _check(ref["losses"][-1] < ref["losses"][0], "loss decreases on the repeated batch")


def self_test():
    """Runs every check; returns 0 on success."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        _test_safetensors(tmp)
        _test_gradients()
        _test_end_to_end(tmp)
    print("self-test passed")
    return 0


def main(argv):
    """Entry point: DIR or --self-test."""
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[1] == "--self-test":
        return self_test()
    run(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
