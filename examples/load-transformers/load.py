#!/usr/bin/env python3
"""Load a transformers model straight from a registry into memory with modelreg.load.

    python examples/load-transformers/load.py REF [--compare DIR] [--plain-http]

The weights stream from the registry into torch tensors (concurrent Range
requests, every chunk verified, nothing written to disk, no copy); the config
comes from the same artifact through the lazy handle. With ``--compare DIR`` the
logits for a fixed prompt are checked against the same model loaded from the
original directory with ``from_pretrained(DIR)``: they must be identical.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def build(ref: str, options: Any) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    import modelreg

    with modelreg.open(ref, options=options) as handle, handle.open("config.json") as fh:
        config = AutoConfig.for_model(**json.load(fh))
    state_dict = modelreg.load(ref, framework="torch", options=options)
    # built on the CPU (non-persistent buffers such as rotary frequencies are computed
    # here); assign=True then makes the loaded tensors themselves the parameters: no copy
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.load_state_dict(state_dict, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def logits(model: Any) -> Any:
    import torch

    ids = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids).logits


def main(argv: list[str] | None = None) -> int:
    import modelreg

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("ref")
    ap.add_argument("--compare", type=Path, help="the model's original directory")
    ap.add_argument("--plain-http", action="store_true")
    args = ap.parse_args(argv)
    options = modelreg.RemoteOptions(plain_http=args.plain_http)
    model = build(args.ref, options)
    out = logits(model)
    print(f"loaded {args.ref}: {sum(p.numel() for p in model.parameters())} parameters")
    if args.compare is not None:
        import torch
        from transformers import AutoModelForCausalLM

        original = AutoModelForCausalLM.from_pretrained(args.compare).eval()
        if not torch.equal(out, logits(original)):
            print("logits differ from the original directory's", file=sys.stderr)
            return 1
        print("logits equal those of the model loaded from", args.compare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
