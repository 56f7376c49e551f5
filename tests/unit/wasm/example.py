"""The worked example (examples/wasm-mlp), loaded from its scripts for tests."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

EXAMPLE_DIR = Path(__file__).resolve().parents[3] / "examples" / "wasm-mlp"


def load_script(name: str) -> ModuleType:
    """Import ``examples/wasm-mlp/<name>.py`` as a module (the folder is not a package)."""
    key = f"wasm_mlp_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, EXAMPLE_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Example:
    wasm: Path
    model_dir: Path
    weights: Path
    inputs: Path
    labels: Path

    def expected(self) -> bytes:
        """The NumPy reference's output for ``inputs`` (the module's output format)."""
        reference = load_script("reference")
        params = reference.load_safetensors(self.weights)
        x = reference.read_inputs(self.inputs.read_bytes(), params["fc1.weight"].shape[1])
        return bytes(reference.encode(*reference.forward(params, x)))


def build_example(root: Path) -> Example:
    """Build the module and the model into ``root`` with the example's own scripts."""
    wasm = load_script("build").build(root / "mlp.wasm")
    model_dir = root / "model"
    weights = load_script("make_weights").make(model_dir, root / "inputs.f32", root / "labels.u8")
    return Example(wasm, model_dir, weights, root / "inputs.f32", root / "labels.u8")
