#!/usr/bin/env python3
"""Generate modelreg's model-file fixtures, deterministically.

    python testdata/generate.py [--out testdata]

Real formats are written with the real packages (safetensors, gguf, numpy,
onnx); the PyTorch-style checkpoint is a zip of hand-assembled pickles (torch
is not needed: modelreg only detects those, it never loads them). Hostile files
are assembled byte by byte. Every value comes from fixed seeds and constants,
zip entries carry a fixed timestamp: running the script twice gives
byte-identical files. ``SHA256SUMS`` lists every generated file.

Nothing here is ever unpickled.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import pickle
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ZIP_TIME = (1980, 1, 1, 0, 0, 0)

# --------------------------------------------------------------------------------------
# tiny-llm: a Hugging Face style Llama checkpoint, sharded safetensors
# --------------------------------------------------------------------------------------

HIDDEN = 64
INTERMEDIATE = 128
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
SPECIAL = ["<unk>", "<s>", "</s>"]
N_MERGES = 61
VOCAB = len(SPECIAL) + 256 + N_MERGES  # 320

CORPUS = (
    "The quick brown fox jumps over the lazy dog. "
    "Models are packaged as OCI artifacts and pushed to registries. "
    "A registry stores the weights, the tokenizer and the configuration of the model. "
    "The tokenizer splits the text into tokens; the model predicts the next token. "
    "Signatures and attestations travel with the model through the supply chain. "
) * 3


def bytes_to_unicode() -> dict[int, str]:
    """Byte-level BPE alphabet: printable bytes map to themselves, others above 255."""
    keep = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def train_bpe(text: str, n_merges: int) -> list[tuple[str, str]]:
    """A tiny deterministic byte-level BPE trainer (ties broken lexicographically)."""
    b2u = bytes_to_unicode()
    words: dict[tuple[str, ...], int] = {}
    for i, word in enumerate(text.split(" ")):
        piece = ("" if i == 0 else " ") + word
        symbols = tuple(b2u[b] for b in piece.encode("utf-8"))
        if symbols:
            words[symbols] = words.get(symbols, 0) + 1
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: dict[tuple[str, str], int] = {}
        for symbols, count in words.items():
            for a, b in itertools.pairwise(symbols):
                pairs[(a, b)] = pairs.get((a, b), 0) + count
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for symbols, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + count
        words = merged
    return merges


def tokenizer_files() -> dict[str, Any]:
    b2u = bytes_to_unicode()
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL)}
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    merges = train_bpe(CORPUS, N_MERGES)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    assert len(vocab) == VOCAB, len(vocab)
    added = [
        {
            "id": i,
            "content": tok,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, tok in enumerate(SPECIAL)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<s>", "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }
    chat_template = (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    )
    tokenizer_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {k: v for k, v in t.items() if k != "id"} for i, t in enumerate(added)
        },
        "bos_token": "<s>",
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": 2048,
        "pad_token": None,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
    }
    special_tokens_map = {
        "bos_token": {
            "content": "<s>",
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        },
        "eos_token": {
            "content": "</s>",
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        },
        "unk_token": {
            "content": "<unk>",
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        },
    }
    return {
        "tokenizer.json": tokenizer,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": special_tokens_map,
        "_vocab_list": list(vocab),
    }


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def llama_tensors() -> list[tuple[str, str, np.ndarray]]:
    """(name, safetensors dtype name, little-endian data array) in a fixed order."""
    rng = np.random.default_rng(20240601)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    out: list[tuple[str, str, np.ndarray]] = [
        ("model.embed_tokens.weight", "float16", normal(VOCAB, HIDDEN).astype("<f2"))
    ]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", "float32", np.ones(HIDDEN, dtype="<f4")),
            (p + "self_attn.q_proj.weight", "bfloat16", to_bf16_bits(normal(HIDDEN, HIDDEN))),
            (
                p + "self_attn.k_proj.weight",
                "bfloat16",
                to_bf16_bits(normal(KV_HEADS * HEAD_DIM, HIDDEN)),
            ),
            (
                p + "self_attn.v_proj.weight",
                "bfloat16",
                to_bf16_bits(normal(KV_HEADS * HEAD_DIM, HIDDEN)),
            ),
            (p + "self_attn.o_proj.weight", "bfloat16", to_bf16_bits(normal(HIDDEN, HIDDEN))),
            (p + "post_attention_layernorm.weight", "float32", np.ones(HIDDEN, dtype="<f4")),
            (p + "mlp.gate_proj.weight", "bfloat16", to_bf16_bits(normal(INTERMEDIATE, HIDDEN))),
            (p + "mlp.up_proj.weight", "bfloat16", to_bf16_bits(normal(INTERMEDIATE, HIDDEN))),
            (p + "mlp.down_proj.weight", "bfloat16", to_bf16_bits(normal(HIDDEN, INTERMEDIATE))),
        ]
    out += [
        ("model.norm.weight", "float32", np.ones(HIDDEN, dtype="<f4")),
        ("lm_head.weight", "bfloat16", to_bf16_bits(normal(VOCAB, HIDDEN))),
    ]
    return out


def write_safetensors(
    path: Path, tensors: list[tuple[str, str, np.ndarray]], metadata: dict[str, str]
) -> int:
    from safetensors import TensorSpec, serialize_file

    keep = [np.ascontiguousarray(arr) for _, _, arr in tensors]
    specs = {
        name: TensorSpec(
            dtype=dtype, shape=list(arr.shape), data_ptr=arr.ctypes.data, data_len=arr.nbytes
        )
        for (name, dtype, _), arr in zip(tensors, keep, strict=True)
    }
    serialize_file(specs, str(path), metadata=metadata)
    return sum(a.nbytes for a in keep)


def write_json(path: Path, doc: Any, *, indent: int | None = 2) -> None:
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


APACHE_HEADER = """\
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION

   (Only the header of the license is reproduced in this test fixture. The full
   text is at http://www.apache.org/licenses/LICENSE-2.0.)

   Copyright 2024 modelreg test fixtures

   Licensed under the Apache License, Version 2.0 (the "License");
   you may not use this file except in compliance with the License.
   You may obtain a copy of the License at

       http://www.apache.org/licenses/LICENSE-2.0

   Unless required by applicable law or agreed to in writing, software
   distributed under the License is distributed on an "AS IS" BASIS,
   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
   See the License for the specific language governing permissions and
   limitations under the License.
"""

MODEL_CARD = """\
---
license: apache-2.0
language:
- en
library_name: transformers
pipeline_tag: text-generation
tags:
- llama
- test-fixture
---

# tiny-llm

A two-layer Llama-architecture model with random weights, made by
`testdata/generate.py` to test packaging. It produces nonsense: do not use it
for anything but tests.

| | |
|---|---|
| parameters | {params:,} |
| hidden size | {hidden} |
| layers | {layers} |
| vocabulary | {vocab} byte-level BPE tokens |
| weights | 2 safetensors shards, bfloat16 with float16 embeddings and float32 norms |
"""


def gen_tiny_llm(out: Path) -> list[Path]:
    d = out / "models" / "tiny-llm"
    d.mkdir(parents=True, exist_ok=True)
    tensors = llama_tensors()
    params = sum(int(np.prod(a.shape)) for _, _, a in tensors)
    split = 1 + 9  # embeddings + layer 0 in the first shard
    shards = [tensors[:split], tensors[split:]]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    total = 0
    weight_map: dict[str, str] = {}
    for shard, fname in zip(shards, names, strict=True):
        total += write_safetensors(d / fname, shard, {"format": "pt"})
        for tname, _, _ in shard:
            weight_map[tname] = fname
    write_json(
        d / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 2048,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.44.2",
        "use_cache": True,
        "vocab_size": VOCAB,
    }
    write_json(d / "config.json", config)
    write_json(
        d / "generation_config.json",
        {
            "_from_model_config": True,
            "bos_token_id": 1,
            "do_sample": True,
            "eos_token_id": 2,
            "max_length": 2048,
            "temperature": 0.6,
            "top_p": 0.9,
            "transformers_version": "4.44.2",
        },
    )
    tok = tokenizer_files()
    write_json(d / "tokenizer.json", tok["tokenizer.json"])
    write_json(d / "tokenizer_config.json", tok["tokenizer_config.json"])
    write_json(d / "special_tokens_map.json", tok["special_tokens_map.json"])
    (d / "README.md").write_text(
        MODEL_CARD.format(params=params, hidden=HIDDEN, layers=LAYERS, vocab=VOCAB),
        encoding="utf-8",
    )
    (d / "LICENSE").write_text(APACHE_HEADER, encoding="utf-8")
    return sorted(p for p in d.iterdir() if p.is_file())


# --------------------------------------------------------------------------------------
# tiny-gguf
# --------------------------------------------------------------------------------------


def gen_tiny_gguf(out: Path) -> list[Path]:
    import gguf
    from gguf.quants import quantize

    d = out / "models" / "tiny-gguf"
    d.mkdir(parents=True, exist_ok=True)
    path = d / "model.gguf"
    rng = np.random.default_rng(7)
    qt = gguf.GGMLQuantizationType

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    vocab = tokenizer_files()["_vocab_list"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-gguf")
    w.add_description("random-weight test fixture made by modelreg's testdata/generate.py")
    w.add_license("apache-2.0")
    w.add_context_length(2048)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(INTERMEDIATE)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(vocab)
    w.add_token_types([3, 3, 3] + [1] * (len(vocab) - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    tensors: list[tuple[str, np.ndarray, Any]] = [
        ("token_embd.weight", quantize(normal(VOCAB, HIDDEN), qt.Q8_0), qt.Q8_0),
        ("blk.0.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32), None),
        ("blk.0.attn_q.weight", quantize(normal(HIDDEN, HIDDEN), qt.Q8_0), qt.Q8_0),
        ("blk.0.attn_k.weight", quantize(normal(KV_HEADS * HEAD_DIM, HIDDEN), qt.Q8_0), qt.Q8_0),
        ("blk.0.attn_v.weight", quantize(normal(KV_HEADS * HEAD_DIM, HIDDEN), qt.Q8_0), qt.Q8_0),
        ("blk.0.attn_output.weight", quantize(normal(HIDDEN, HIDDEN), qt.Q8_0), qt.Q8_0),
        ("blk.0.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32), None),
        ("blk.0.ffn_gate.weight", quantize(normal(INTERMEDIATE, HIDDEN), qt.Q4_0), qt.Q4_0),
        ("blk.0.ffn_up.weight", quantize(normal(INTERMEDIATE, HIDDEN), qt.Q4_0), qt.Q4_0),
        ("blk.0.ffn_down.weight", quantize(normal(HIDDEN, INTERMEDIATE), qt.Q4_0), qt.Q4_0),
        ("output_norm.weight", np.ones(HIDDEN, dtype=np.float32), None),
        ("output.weight", quantize(normal(VOCAB, HIDDEN), qt.Q8_0), qt.Q8_0),
    ]
    for name, data, raw_dtype in tensors:
        w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return [path]


# --------------------------------------------------------------------------------------
# tiny-onnx
# --------------------------------------------------------------------------------------


def onnx_mlp() -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    w1 = (rng.standard_normal((16, 32)) * 0.1).astype(np.float32)
    b1 = np.zeros(32, dtype=np.float32)
    w2 = (rng.standard_normal((32, 8)) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(8) * 0.01).astype(np.float16)
    inits = [
        numpy_helper.from_array(w1, "fc1.weight"),
        numpy_helper.from_array(b1, "fc1.bias"),
        numpy_helper.from_array(w2, "fc2.weight"),
        numpy_helper.from_array(b2, "fc2.bias_half"),
        # typed (non-raw) storage, as some exporters write small constants
        helper.make_tensor("scale", TensorProto.FLOAT, [1], [0.5]),
        helper.make_tensor("shape", TensorProto.INT64, [2], [1, 8]),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "fc1.weight"], ["h0"], name="fc1_matmul"),
        helper.make_node("Add", ["h0", "fc1.bias"], ["h1"], name="fc1_add"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "fc2.weight"], ["h3"], name="fc2_matmul"),
        helper.make_node(
            "Cast", ["fc2.bias_half"], ["b2f"], to=TensorProto.FLOAT, name="bias_cast"
        ),
        helper.make_node("Add", ["h3", "b2f"], ["h4"], name="fc2_add"),
        helper.make_node("Mul", ["h4", "scale"], ["h5"], name="scale_mul"),
        helper.make_node("Reshape", ["h5", "shape"], ["output"], name="reshape"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="modelreg-testdata",
        producer_version="1.0",
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=8,
        doc_string="two-layer MLP with random weights (test fixture)",
    )
    helper.set_model_props(model, {"license": "apache-2.0", "author": "modelreg tests"})
    onnx.checker.check_model(model)
    return model


def gen_tiny_onnx(out: Path) -> list[Path]:
    import onnx

    d = out / "models" / "tiny-onnx"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save_model(onnx_mlp(), str(d / "model.onnx"))
    e = out / "models" / "tiny-onnx-external"
    e.mkdir(parents=True, exist_ok=True)
    for old in (e / "model.onnx", e / "model.onnx.data"):
        old.unlink(missing_ok=True)
    onnx.save_model(
        onnx_mlp(),
        str(e / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=64,
        convert_attribute=False,
    )
    return [d / "model.onnx", e / "model.onnx", e / "model.onnx.data"]


# --------------------------------------------------------------------------------------
# pickle-model: PyTorch-style zip of pickles, a raw pickle; written by hand
# --------------------------------------------------------------------------------------


class PickleAsm:
    """Assemble pickle opcodes by hand (nothing is imported or executed)."""

    def __init__(self, protocol: int) -> None:
        self.buf = bytearray(pickle.PROTO + bytes([protocol]))
        self.memo = 0

    def op(self, code: bytes) -> PickleAsm:
        self.buf += code
        return self

    def put(self) -> PickleAsm:
        self.buf += pickle.BINPUT + bytes([self.memo])
        self.memo += 1
        return self

    def global_(self, module: str, name: str) -> PickleAsm:
        self.buf += pickle.GLOBAL + f"{module}\n{name}\n".encode()
        return self.put()

    def string(self, text: str) -> PickleAsm:
        raw = text.encode("utf-8")
        self.buf += pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw
        return self.put()

    def int_(self, value: int) -> PickleAsm:
        if 0 <= value < 256:
            self.buf += pickle.BININT1 + bytes([value])
        else:
            self.buf += pickle.BININT + struct.pack("<i", value)
        return self

    def tuple_(self, *ints: int) -> PickleAsm:
        self.buf += pickle.MARK
        for v in ints:
            self.int_(v)
        self.buf += pickle.TUPLE
        return self.put()

    def bytes_(self) -> bytes:
        return bytes(self.buf + pickle.STOP)


def torch_state_dict_pickle(
    tensors: list[tuple[str, str, str, tuple[int, ...]]],
    extra_global: tuple[str, str] | None = None,
) -> bytes:
    """A protocol-2 pickle shaped like torch.save(state_dict): OrderedDict of
    torch._utils._rebuild_tensor_v2(persistent storage, offset, size, stride, ...)."""
    a = PickleAsm(2)
    a.global_("collections", "OrderedDict").op(pickle.EMPTY_TUPLE).op(pickle.REDUCE).put()
    a.op(pickle.MARK)
    for name, storage_cls, key, shape in tensors:
        a.string(name)
        a.global_("torch._utils", "_rebuild_tensor_v2")
        a.op(pickle.MARK)
        a.op(pickle.MARK).string("storage").global_("torch", storage_cls).string(key)
        a.string("cpu").int_(int(np.prod(shape))).op(pickle.TUPLE).put().op(pickle.BINPERSID)
        a.int_(0)
        a.tuple_(*shape)
        strides = [int(np.prod(shape[i + 1 :])) for i in range(len(shape))]
        a.tuple_(*strides)
        a.op(pickle.NEWFALSE)
        a.global_("collections", "OrderedDict").op(pickle.EMPTY_TUPLE).op(pickle.REDUCE).put()
        a.op(pickle.TUPLE).put().op(pickle.REDUCE).put()
    if extra_global is not None:
        # a hostile extra entry: calls e.g. os.system("echo ...") when unpickled
        a.string("__hook__")
        a.global_(*extra_global)
        a.string("echo modelreg-test-fixture").op(pickle.TUPLE1).put().op(pickle.REDUCE).put()
    a.op(pickle.SETITEMS)
    return a.bytes_()


def torch_zip(
    archive: str, arrays: list[tuple[str, np.ndarray]], extra_global: tuple[str, str] | None = None
) -> bytes:
    cls = {np.dtype("<f4"): "FloatStorage", np.dtype("<f2"): "HalfStorage"}
    meta = [
        (name, cls[arr.dtype], str(i), tuple(arr.shape)) for i, (name, arr) in enumerate(arrays)
    ]
    members: list[tuple[str, bytes]] = [
        (f"{archive}/data.pkl", torch_state_dict_pickle(meta, extra_global)),
        (f"{archive}/byteorder", b"little"),
    ]
    members += [(f"{archive}/data/{i}", arr.tobytes()) for i, (_, arr) in enumerate(arrays)]
    members += [
        (f"{archive}/version", b"3\n"),
        (f"{archive}/.data/serialization_id", b"0123456789" * 4),
    ]
    return zip_bytes(members)


def zip_bytes(members: list[tuple[str, bytes]], compress: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system = 3
            info.external_attr = 0o644 << 16
            info.compress_type = compress
            zf.writestr(info, data)
    return buf.getvalue()


def gen_pickle_model(out: Path) -> list[Path]:
    d = out / "models" / "pickle-model"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    arrays = [
        ("linear.weight", (rng.standard_normal((8, 4)) * 0.1).astype("<f4")),
        ("linear.bias", np.zeros(8, dtype="<f4")),
        ("embedding.weight", (rng.standard_normal((16, 4)) * 0.1).astype("<f2")),
    ]
    (d / "pytorch_model.bin").write_bytes(torch_zip("archive", arrays))
    # a scikit-learn style raw pickle: plain dict of lists (protocol 4, no imports)
    state = {
        "coef": [[round(float(x), 6) for x in row] for row in rng.standard_normal((3, 4))],
        "intercept": [0.0, 0.5, -0.5],
        "classes": ["cat", "dog", "fox"],
    }
    (d / "model.pkl").write_bytes(pickle.dumps(state, protocol=4))
    write_json(
        d / "config.json",
        {
            "architectures": ["TinyLinear"],
            "model_type": "tiny-linear",
            "hidden_size": 4,
            "torch_dtype": "float32",
        },
    )
    return [d / "pytorch_model.bin", d / "model.pkl", d / "config.json"]


def gen_numpy_model(out: Path) -> list[Path]:
    d = out / "models" / "numpy-weights"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((4, 6)) * 0.1).astype("<f4")
    b = np.arange(6, dtype="<i8")
    members = []
    for name, arr in (("w", w), ("b", b)):
        f = io.BytesIO()
        np.lib.format.write_array(f, arr, allow_pickle=False)
        members.append((f"{name}.npy", f.getvalue()))
    (d / "weights.npz").write_bytes(zip_bytes(members))
    single = io.BytesIO()
    np.lib.format.write_array(single, w, allow_pickle=False)
    (d / "w.npy").write_bytes(single.getvalue())
    return [d / "weights.npz", d / "w.npy"]


# --------------------------------------------------------------------------------------
# hostile files
# --------------------------------------------------------------------------------------


def st_file(header: bytes | dict[str, Any], data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def f32(shape: list[int], begin: int) -> dict[str, Any]:
    n = int(np.prod(shape)) * 4
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, begin + n]}


def hostile_safetensors() -> dict[str, bytes]:
    good = st_file({"a": f32([2], 0), "b": f32([2], 8)}, bytes(16))
    return {
        "st-header-too-large.safetensors": struct.pack("<Q", 2**60) + b"{}" + bytes(6),
        "st-header-past-eof.safetensors": struct.pack("<Q", 4096) + b'{"a":' + bytes(11),
        "st-offsets-past-eof.safetensors": st_file(
            {"a": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}, bytes(16)
        ),
        "st-overlapping-tensors.safetensors": st_file(
            {"a": f32([2], 0), "b": f32([2], 4)}, bytes(12)
        ),
        "st-gap-between-tensors.safetensors": st_file(
            {"a": f32([2], 0), "b": f32([2], 12)}, bytes(20)
        ),
        "st-trailing-bytes.safetensors": good + b"EXTRA",
        "st-truncated.safetensors": good[:-6],
        "st-bad-json.safetensors": st_file(b'{"a": {"dtype": "F32", "shape": [2],', bytes(8)),
        "st-unknown-dtype.safetensors": st_file(
            {"a": {"dtype": "F12", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)
        ),
        "st-shape-mismatch.safetensors": st_file(
            {"a": {"dtype": "F16", "shape": [3, 3], "data_offsets": [0, 36]}}, bytes(36)
        ),
        "st-negative-dim.safetensors": st_file(
            {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)
        ),
        "st-non-object-header.safetensors": st_file(b"[1, 2, 3]", b""),
        "st-duplicate-keys.safetensors": st_file(
            b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
            b'"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}',
            bytes(16),
        ),
        "st-metadata-not-string.safetensors": st_file(
            {"__metadata__": {"format": 1}, "a": f32([2], 0)}, bytes(8)
        ),
        "st-bad-utf8.safetensors": st_file(b'{"\xff\xfe": {}}', b""),
        "st-subbyte-misaligned.safetensors": st_file(
            {"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, bytes(2)
        ),
    }


def gguf_str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def gguf_kv_str(key: str, value: str) -> bytes:
    return gguf_str(key) + struct.pack("<I", 8) + gguf_str(value)


def gguf_kv_u32(key: str, value: int) -> bytes:
    return gguf_str(key) + struct.pack("<II", 4, value)


def gguf_ti(name: str, dims: list[int], gtype: int, offset: int) -> bytes:
    return (
        gguf_str(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", gtype, offset)
    )


def gguf_file(
    kvs: list[bytes],
    tis: list[bytes],
    data: bytes,
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
    n_tensors: int | None = None,
    n_kv: int | None = None,
    alignment: int = 32,
) -> bytes:
    head = (
        magic
        + struct.pack(
            "<IQQ",
            version,
            len(tis) if n_tensors is None else n_tensors,
            len(kvs) if n_kv is None else n_kv,
        )
        + b"".join(kvs)
        + b"".join(tis)
    )
    pad = (-len(head)) % alignment
    return head + bytes(pad) + data


def hostile_gguf() -> dict[str, bytes]:
    arch = gguf_kv_str("general.architecture", "llama")
    one = [gguf_ti("w", [8], 0, 0)]
    ok_data = bytes(32)
    good = gguf_file([arch], one, ok_data)
    return {
        "gguf-bad-magic.gguf": gguf_file([arch], one, ok_data, magic=b"GGML"),
        "gguf-version-1.gguf": gguf_file([arch], one, ok_data, version=1),
        "gguf-version-99.gguf": gguf_file([arch], one, ok_data, version=99),
        "gguf-huge-tensor-count.gguf": gguf_file([arch], one, ok_data, n_tensors=2**60),
        "gguf-huge-kv-count.gguf": gguf_file([arch], one, ok_data, n_kv=2**40),
        "gguf-impossible-counts.gguf": gguf_file([arch], one, ok_data, n_tensors=100_000),
        "gguf-huge-string.gguf": gguf_file(
            [struct.pack("<Q", 2**62) + b"general.architecture"], one, ok_data
        ),
        "gguf-huge-array.gguf": gguf_file(
            [arch, gguf_str("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**40)],
            one,
            ok_data,
        ),
        "gguf-nested-array.gguf": gguf_file(
            [arch, gguf_str("x") + struct.pack("<IIQ", 9, 9, 1)], one, ok_data
        ),
        "gguf-unknown-value-type.gguf": gguf_file(
            [arch, gguf_str("x") + struct.pack("<I", 13) + bytes(8)], one, ok_data
        ),
        "gguf-truncated-data.gguf": good[: len(good) - 40],
        "gguf-truncated-header.gguf": good[:70],
        "gguf-offset-past-eof.gguf": gguf_file([arch], [gguf_ti("w", [1024], 0, 0)], ok_data),
        "gguf-overlapping-tensors.gguf": gguf_file(
            [arch], [gguf_ti("a", [8], 0, 0), gguf_ti("b", [8], 0, 0)], bytes(64)
        ),
        "gguf-misplaced-offset.gguf": gguf_file(
            [arch], [gguf_ti("a", [8], 0, 0), gguf_ti("b", [8], 0, 40)], bytes(96)
        ),
        "gguf-unknown-type.gguf": gguf_file([arch], [gguf_ti("w", [8], 4, 0)], ok_data),
        "gguf-too-many-dims.gguf": gguf_file(
            [arch], [gguf_ti("w", [1, 1, 1, 1, 8], 0, 0)], ok_data
        ),
        "gguf-negative-dim.gguf": gguf_file([arch], [gguf_ti("w", [2**64 - 8], 0, 0)], ok_data),
        "gguf-block-mismatch.gguf": gguf_file([arch], [gguf_ti("w", [33], 8, 0)], bytes(64)),
        "gguf-bad-alignment.gguf": gguf_file(
            [arch, gguf_kv_u32("general.alignment", 48)], one, ok_data, alignment=48
        ),
        "gguf-alignment-wrong-type.gguf": gguf_file(
            [arch, gguf_str("general.alignment") + struct.pack("<IQ", 10, 32)], one, ok_data
        ),
        "gguf-duplicate-key.gguf": gguf_file([arch, arch], one, ok_data),
        "gguf-duplicate-tensor.gguf": gguf_file(
            [arch], [gguf_ti("w", [8], 0, 0), gguf_ti("w", [8], 0, 32)], bytes(64)
        ),
    }


def hostile_onnx(tiny_onnx: bytes) -> dict[str, bytes]:
    from onnx import TensorProto, helper

    def with_tensor(t: Any) -> bytes:
        graph = helper.make_graph([], "g", [], [], initializer=[t])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        return bytes(model.SerializeToString())

    def external(location: str) -> Any:
        t = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "16")):
            e = t.external_data.add()
            e.key, e.value = k, v
        return t

    bad_raw = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], raw_data=bytes(10))
    neg = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-4], raw_data=bytes(16))
    unknown = TensorProto(name="w", data_type=99, dims=[4], raw_data=bytes(16))
    return {
        "onnx-external-escape.onnx": with_tensor(external("../../../etc/passwd")),
        "onnx-external-absolute.onnx": with_tensor(external("/etc/shadow")),
        "onnx-raw-size-mismatch.onnx": with_tensor(bad_raw),
        "onnx-negative-dim.onnx": with_tensor(neg),
        "onnx-unknown-dtype.onnx": with_tensor(unknown),
        "onnx-truncated.onnx": tiny_onnx[: len(tiny_onnx) // 2],
    }


def hostile_pickles() -> dict[str, bytes]:
    evil = PickleAsm(4)
    evil.buf += pickle.SHORT_BINUNICODE + b"\x02os" + pickle.MEMOIZE
    evil.buf += pickle.SHORT_BINUNICODE + b"\x06system" + pickle.MEMOIZE
    evil.buf += pickle.STACK_GLOBAL + pickle.MEMOIZE
    cmd = b"echo modelreg-test-fixture"
    evil.buf += pickle.SHORT_BINUNICODE + bytes([len(cmd)]) + cmd + pickle.MEMOIZE
    evil.buf += pickle.TUPLE1 + pickle.MEMOIZE + pickle.REDUCE + pickle.MEMOIZE
    evil_zip = torch_zip(
        "archive", [("w", np.zeros(4, dtype="<f4"))], extra_global=("posix", "system")
    )
    obj = io.BytesIO()
    np.lib.format.write_array(obj, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return {
        "pickle-os-system.pkl": evil.bytes_(),
        "pickle-os-system-named.bin": evil.bytes_(),
        "torch-zip-posix-system.bin": evil_zip,
        "numpy-object-array.npy": obj.getvalue(),
    }


def gen_hostile(out: Path) -> list[Path]:
    d = out / "hostile"
    d.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    files.update(hostile_safetensors())
    files.update(hostile_gguf())
    files.update(hostile_onnx((out / "models" / "tiny-onnx" / "model.onnx").read_bytes()))
    files.update(hostile_pickles())
    written = []
    for name, data in sorted(files.items()):
        (d / name).write_bytes(data)
        written.append(d / name)
    return written


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=HERE, help="output directory (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    files += gen_tiny_llm(out)
    files += gen_tiny_gguf(out)
    files += gen_tiny_onnx(out)
    files += gen_pickle_model(out)
    files += gen_numpy_model(out)
    files += gen_hostile(out)
    lines = []
    for p in sorted(files, key=lambda p: p.relative_to(out).as_posix()):
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        lines.append(f"{digest}  {p.relative_to(out).as_posix()}\n")
    (out / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")
    total = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files, {total} bytes, under {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
