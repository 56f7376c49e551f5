#!/usr/bin/env python3
"""NumPy reference of the example MLP, in the module's exact arithmetic.

    python examples/wasm-mlp/reference.py MODEL.safetensors INPUTS.f32 > expected.bin
    python examples/wasm-mlp/reference.py --decode OUTPUT.bin [--labels LABELS.u8]

The module sums in index order with float32 rounding after every multiply and
add; so does :func:`forward` (no BLAS, no fused multiply-add), which makes its
logits equal to the module's in practice, not merely close.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

LAYERS = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


def load_safetensors(path: Path, names: tuple[str, ...] = LAYERS) -> dict[str, np.ndarray]:
    """Read F32 tensors from a safetensors file (enough of the format for this example)."""
    data = path.read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name in names:
        entry = header[name]
        if entry["dtype"] != "F32":
            raise ValueError(f"{name}: expected F32, got {entry['dtype']}")
        begin, end = entry["data_offsets"]
        arr = np.frombuffer(data[base + begin : base + end], dtype="<f4")
        out[name] = arr.reshape(entry["shape"])
    return out


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[N, C]`` (float32) and classes ``[N]`` for inputs ``x`` ``[N, D]``."""
    w1, b1 = params["fc1.weight"], params["fc1.bias"]
    w2, b2 = params["fc2.weight"], params["fc2.bias"]
    x = np.asarray(x, dtype=np.float32)
    hid = np.broadcast_to(b1, (len(x), len(b1))).astype(np.float32)
    for i in range(w1.shape[1]):
        hid = hid + w1[:, i][None, :] * x[:, i : i + 1]
    hid = np.maximum(hid, np.float32(0))
    logits = np.broadcast_to(b2, (len(x), len(b2))).astype(np.float32)
    for j in range(w2.shape[1]):
        logits = logits + w2[:, j][None, :] * hid[:, j : j + 1]
    return logits, np.argmax(logits, axis=1).astype(np.int32)


def encode(logits: np.ndarray, classes: np.ndarray) -> bytes:
    """The module's output format: per sample, C float32 logits then an int32 class."""
    n, c = logits.shape
    rec = np.zeros((n, c + 1), dtype="<f4")
    rec[:, :c] = logits
    rec.view("<i4")[:, c] = classes
    return rec.tobytes()


def decode(data: bytes, num_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rec = np.frombuffer(data, dtype="<f4").reshape(-1, num_classes + 1)
    return rec[:, :num_classes].copy(), rec.view("<i4")[:, num_classes].copy()


def read_inputs(data: bytes, features: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").reshape(-1, features)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="MODEL.safetensors INPUTS.f32")
    parser.add_argument("--decode", type=Path, help="print an output file as text")
    parser.add_argument("--labels", type=Path, help="true classes (u8) to score against")
    args = parser.parse_args(argv)
    if args.decode is not None:
        logits, classes = decode(args.decode.read_bytes())
        for row, cls in zip(logits, classes, strict=True):
            print(" ".join(f"{v:+.6f}" for v in row), "->", int(cls))
        if args.labels is not None:
            labels = np.frombuffer(args.labels.read_bytes(), dtype=np.uint8)
            print(f"accuracy {np.mean(classes == labels):.3f} on {len(labels)} samples")
        return 0
    if len(args.files) != 2:
        parser.error("give MODEL.safetensors and INPUTS.f32 (or --decode OUTPUT)")
    params = load_safetensors(args.files[0])
    x = read_inputs(args.files[1].read_bytes(), params["fc1.weight"].shape[1])
    sys.stdout.buffer.write(encode(*forward(params, x)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
