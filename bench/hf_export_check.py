"""A Tessera checkpoint opens in Hugging Face transformers and gives Tessera's logits.

Reads a consolidated checkpoint folder (config.json, model.safetensors, tokenizer.json, as
`tessera train` writes it or `tessera checkpoint convert` exports it) with
transformers.GPT2LMHeadModel.from_pretrained and PreTrainedTokenizerFast, and the file
`tessera generate --logits-out` wrote from the same folder (the prompt's token ids, Tessera's
fp32 logits (T, V), the prompt in its metadata). Checks that the tokenizer encodes the prompt to
the same ids and that the logits agree to 1e-4 (||hf - tessera|| / ||tessera||, fp32 on the CPU).
Prints one JSON line; exits 1 on a mismatch. Needs transformers and safetensors (the GPU
machine's Python has both; Debian 12 has neither).
usage: python3 bench/hf_export_check.py --checkpoint DIR --logits FILE
"""

import argparse
import json
import os
import sys

import torch
from safetensors import safe_open
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast


def main():
    """Loads both sides, compares, prints the verdict."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="consolidated checkpoint folder")
    ap.add_argument("--logits", required=True, help="file from tessera generate --logits-out")
    args = ap.parse_args()

    with safe_open(args.logits, framework="pt") as f:
        tokens = f.get_tensor("tokens").long()
        want = f.get_tensor("logits").double()
        prompt = f.metadata()["prompt"]
    model = GPT2LMHeadModel.from_pretrained(args.checkpoint, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        got = model(tokens.unsqueeze(0)).logits[0].double()
    rel = (got - want).norm().item() / want.norm().item()

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.checkpoint, "tokenizer.json"))
    ids = tok.encode(prompt)
    same_ids = ids == tokens[1:].tolist()  # tokens[0] is <|endoftext|>
    ok = rel <= 1e-4 and same_ids
    print(json.dumps({"check": "hf_export", "logits_rel_error": rel, "positions": len(tokens),
                      "vocab": want.shape[1], "tokenizer_ids_equal": same_ids,
                      "transformers_ids": ids, "tessera_ids": tokens[1:].tolist(),
                      "ok": ok}), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
