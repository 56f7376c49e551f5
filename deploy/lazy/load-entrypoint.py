#!/usr/bin/env python3
"""Inference container entrypoint: stream the model from the registry into memory.

    MODEL_REF=registry.example.com/team/llm:v1 python /app/load-entrypoint.py

No init container, no volume: the weights go from the registry straight into
torch tensors (modelreg.load, every chunk verified), the model is built from its
config, and a smoke forward pass runs before the server would start. Replace
``serve`` with your server. With TP_RANK/TP_WORLD set, only this rank's shards
are fetched (modelreg.load's tensor_parallel).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples"))


def serve(model: object) -> None:  # replace with the inference server
    print("model ready:", type(model).__name__, flush=True)


def main() -> int:
    from load_transformers import build, logits  # examples/load-transformers/load.py

    import modelreg

    ref = os.environ["MODEL_REF"]
    options = modelreg.RemoteOptions(plain_http=os.environ.get("MODEL_PLAIN_HTTP") == "1")
    model = build(ref, options)
    logits(model)  # smoke test before taking traffic
    serve(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
