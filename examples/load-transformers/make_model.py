#!/usr/bin/env python3
"""Make a small but real transformers model (Llama architecture, random weights,
safetensors) and optionally push it.

    python examples/load-transformers/make_model.py DIR [--push REF]

The weights are seeded, so the same DIR is written on every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def make(out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(17)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("directory", type=Path)
    ap.add_argument("--push", metavar="REF", help="push the directory to this reference")
    ap.add_argument("--plain-http", action="store_true")
    args = ap.parse_args(argv)
    make(args.directory)
    if args.push:
        import modelreg

        modelreg.push(
            args.directory, args.push, options=modelreg.RemoteOptions(plain_http=args.plain_http)
        )
        print(f"pushed {args.directory} to {args.push}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
