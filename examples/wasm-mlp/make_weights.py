#!/usr/bin/env python3
"""Train the example MLP classifier (NumPy, deterministic) and write it as safetensors.

    python examples/wasm-mlp/make_weights.py [--out build/model] [--inputs build/inputs.f32]

The task: four Gaussian clusters in 16 dimensions. The model: 16 -> 64 (ReLU) -> 4,
trained by full-batch gradient descent on softmax cross-entropy from a fixed seed.
Written to ``OUT/model.safetensors`` (F32 tensors ``fc1.weight [64,16]``,
``fc1.bias [64]``, ``aux.embedding [512,512]``, ``fc2.weight [4,64]``, ``fc2.bias [4]``,
in that order in the file) plus ``OUT/config.json``. ``aux.embedding`` (1 MiB) is a
tensor the inference module never reads: it sits between the two layers in the
file to show that a lazy run fetches only what the module reads.

``--inputs`` gets held-out feature vectors (little-endian float32, the module's
input format) and ``--labels`` their true classes (one byte each).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
D, H, C = 16, 64, 4
SEED = 20240607
AUX_SHAPE = (512, 512)


def clusters(
    rng: np.random.Generator, n: int, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, C, size=n)
    x = centers[labels] + rng.normal(0.0, 1.0, size=(n, D))
    return x, labels


def train(
    steps: int = 300, lr: float = 0.2
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Returns (float32 tensors in file order, held-out inputs, held-out labels)."""
    rng = np.random.default_rng(SEED)
    centers = rng.normal(0.0, 0.7, size=(C, D))
    x, y = clusters(rng, 1024, centers)
    x_test, y_test = clusters(rng, 64, centers)
    w1 = rng.normal(0.0, np.sqrt(2.0 / D), size=(H, D))
    b1 = np.zeros(H)
    w2 = rng.normal(0.0, np.sqrt(1.0 / H), size=(C, H))
    b2 = np.zeros(C)
    onehot = np.eye(C)[y]
    # einsum, not `@`: no BLAS, so no thread pool (small shapes run faster without one)
    # and the same sums on every machine.
    for _ in range(steps):
        pre = np.einsum("nd,hd->nh", x, w1) + b1
        hid = np.maximum(pre, 0.0)
        logits = np.einsum("nh,ch->nc", hid, w2) + b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g_logits = (p - onehot) / len(x)
        g_w2 = np.einsum("nc,nh->ch", g_logits, hid)
        g_b2 = g_logits.sum(axis=0)
        g_hid = np.einsum("nc,ch->nh", g_logits, w2)
        g_pre = g_hid * (pre > 0)
        g_w1 = np.einsum("nh,nd->hd", g_pre, x)
        g_b1 = g_pre.sum(axis=0)
        w1 -= lr * g_w1
        b1 -= lr * g_b1
        w2 -= lr * g_w2
        b2 -= lr * g_b2
    aux = rng.normal(0.0, 0.02, size=AUX_SHAPE)
    tensors = {
        "fc1.weight": w1,
        "fc1.bias": b1,
        "aux.embedding": aux,
        "fc2.weight": w2,
        "fc2.bias": b2,
    }
    as32 = {k: np.ascontiguousarray(v, dtype="<f4") for k, v in tensors.items()}
    return as32, x_test.astype("<f4"), y_test.astype(np.uint8)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """A minimal safetensors writer: data in the given order, header padded to 8 bytes."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, arr in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for arr in tensors.values():
            fh.write(arr.tobytes())
    tmp.replace(path)


def make(out: Path, inputs: Path | None = None, labels: Path | None = None) -> Path:
    """Write the model directory ``out`` (and the held-out set); returns the weights file."""
    tensors, x_test, y_test = train()
    weights = out / "model.safetensors"
    write_safetensors(weights, tensors, {"format": "pt", "task": "4-class clusters"})
    config = {
        "architectures": ["MLPClassifier"],
        "input_features": D,
        "hidden_size": H,
        "num_classes": C,
        "activation": "relu",
        "input_format": "little-endian float32 [N, 16]",
        "output_format": "per sample: float32 logits [4], int32 class",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if inputs is not None:
        inputs.parent.mkdir(parents=True, exist_ok=True)
        inputs.write_bytes(x_test.tobytes())
    if labels is not None:
        labels.parent.mkdir(parents=True, exist_ok=True)
        labels.write_bytes(y_test.tobytes())
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "build" / "model")
    parser.add_argument("--inputs", type=Path, default=HERE / "build" / "inputs.f32")
    parser.add_argument("--labels", type=Path, default=HERE / "build" / "labels.u8")
    args = parser.parse_args(argv)
    weights = make(args.out, args.inputs, args.labels)
    print(f"wrote {weights} ({weights.stat().st_size} bytes), {args.inputs}, {args.labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
