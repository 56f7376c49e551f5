"""WebAssembly bundles: a portable inference module bound to a model by digest.

* :func:`pack`: a CNCF TAG Runtime Wasm OCI artifact (config
  ``application/vnd.wasm.config.v0+json``, one ``application/wasm`` layer) whose
  manifest pins the model it reads (``dev.modelreg.wasm.model`` = ``name@digest``).
  Pulling the bundle never pulls the weights.
* :func:`run`: run a bundle in wasmtime with WASI stdio and the ``modelreg/1``
  host ABI (:mod:`modelreg.wasm.abi`), through which the module lists tensors and
  copies tensor bytes into its memory. The bytes come from the registry lazily
  (:mod:`modelreg.lazy`), each chunk verified before the module sees it. Memory,
  time and fuel limits; ``check=`` refuses unverified modules or models.
* :func:`run_module`: the runtime alone, on any :class:`TensorSource`.

See ``docs/wasm.md`` for the format, the ABI and a worked example
(``examples/wasm-mlp``).
"""

from __future__ import annotations

from modelreg.wasm._errors import WasmAbiError, WasmError, WasmLimitError, WasmTrapError
from modelreg.wasm.abi import ABI_FUNCTIONS, ABI_MODULE, ABI_VERSION, DTYPE_CODES, ReadRecord
from modelreg.wasm.api import BundleRun, PackResult, lint_module, pack, run, run_local
from modelreg.wasm.bundle import (
    ANN_ABI,
    ANN_MODEL,
    WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
    Bundle,
    WasmConfig,
    build_bundle,
    read_bundle,
)
from modelreg.wasm.checks import ArtifactCheck, all_of, policy_check, signature_check
from modelreg.wasm.host import (
    InMemoryTensorSource,
    LazyModelSource,
    SafetensorsFileSource,
    TensorMeta,
    TensorSource,
    TensorSpec,
    open_model_source,
)
from modelreg.wasm.runtime import DEFAULT_LIMITS, Limits, RunResult, parse_size, run_module

__all__ = [
    "ABI_FUNCTIONS",
    "ABI_MODULE",
    "ABI_VERSION",
    "ANN_ABI",
    "ANN_MODEL",
    "DEFAULT_LIMITS",
    "DTYPE_CODES",
    "WASM_CONFIG_MEDIA_TYPE",
    "WASM_LAYER_MEDIA_TYPE",
    "ArtifactCheck",
    "Bundle",
    "BundleRun",
    "InMemoryTensorSource",
    "LazyModelSource",
    "Limits",
    "PackResult",
    "ReadRecord",
    "RunResult",
    "SafetensorsFileSource",
    "TensorMeta",
    "TensorSource",
    "TensorSpec",
    "WasmAbiError",
    "WasmConfig",
    "WasmError",
    "WasmLimitError",
    "WasmTrapError",
    "all_of",
    "build_bundle",
    "lint_module",
    "open_model_source",
    "pack",
    "parse_size",
    "policy_check",
    "read_bundle",
    "run",
    "run_local",
    "run_module",
    "signature_check",
]
