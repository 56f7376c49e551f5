"""ONNX model reader: a minimal protobuf wire-format walker, no ``onnx`` package.

It extracts ``ModelProto.ir_version``, ``producer_name``/``producer_version``,
``domain``, ``model_version``, ``opset_import``, ``metadata_props`` and, from
``graph``, the name, node count and every ``initializer`` (name, dims,
data_type, where its bytes are and how many). Nodes and tensor payloads are
skipped, never parsed.

ONNX has no separate header: the tensor table is interleaved with the tensor
bytes inside one protobuf message. The reader therefore walks the whole
message, but jumps over ``raw_data`` and packed typed payloads without reading
them. What it does read (field keys, names, dims, nodes are skipped) is capped
by ``max_scan`` (64 MiB by default): a file that needs more raises
:class:`SizeLimitError`. Each skipped payload larger than the read buffer costs
one more request when reading remotely, so a model with N large in-file
initializers needs about N small requests; models over 2 GB keep their weights
in external data files and cost only a few.

Field numbers and data types are those of ``onnx.proto`` (onnx 1.23).
External data locations are checked to stay inside the model directory.
"""

from __future__ import annotations

from typing import Final

from modelreg.errors import FormatError, SizeLimitError, UnsafeContentError

from ._base import BufferedReader, MetadataValue, ModelFileInfo, RangeSource, TensorInfo, summarize

__all__ = ["DEFAULT_MAX_SCAN", "ONNX_DTYPES", "parse_onnx"]

DEFAULT_MAX_SCAN: Final = 64 * 1024 * 1024

#: TensorProto.DataType id -> (name, bits per element; 0 for variable-size STRING)
ONNX_DTYPES: Final[dict[int, tuple[str, int]]] = {
    1: ("FLOAT", 32),
    2: ("UINT8", 8),
    3: ("INT8", 8),
    4: ("UINT16", 16),
    5: ("INT16", 16),
    6: ("INT32", 32),
    7: ("INT64", 64),
    8: ("STRING", 0),
    9: ("BOOL", 8),
    10: ("FLOAT16", 16),
    11: ("DOUBLE", 64),
    12: ("UINT32", 32),
    13: ("UINT64", 64),
    14: ("COMPLEX64", 64),
    15: ("COMPLEX128", 128),
    16: ("BFLOAT16", 16),
    17: ("FLOAT8E4M3FN", 8),
    18: ("FLOAT8E4M3FNUZ", 8),
    19: ("FLOAT8E5M2", 8),
    20: ("FLOAT8E5M2FNUZ", 8),
    21: ("UINT4", 4),
    22: ("INT4", 4),
    23: ("FLOAT4E2M1", 4),
    24: ("FLOAT8E8M0", 8),
    25: ("UINT2", 2),
    26: ("INT2", 2),
    27: ("FLOAT6E2M3", 6),
    28: ("FLOAT6E3M2", 6),
}

_WT_VARINT: Final = 0
_WT_I64: Final = 1
_WT_LEN: Final = 2
_WT_I32: Final = 5

# TensorProto fields holding typed (non-raw) data
_TYPED_FIELDS: Final = frozenset({4, 5, 6, 7, 10, 11})
_MAX_NAME: Final = 64 * 1024
_KEEP_STRING: Final = 4096
_HINT_CORRUPT: Final = "the file is not a valid ONNX model; re-export or re-download it"


class _Walker:
    def __init__(self, source: RangeSource, label: str, max_scan: int, max_tensors: int) -> None:
        self.label = label
        self.max_tensors = max_tensors
        self.r = BufferedReader(
            source,
            name=label,
            max_scanned=max_scan,
            limit_hint="raise max_scan if this ONNX file is trusted",
        )

    # -- wire format ---------------------------------------------------------------
    def varint(self, what: str) -> int:
        result = 0
        for shift in range(0, 70, 7):
            byte = self.r.read(1, what)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result & 0xFFFF_FFFF_FFFF_FFFF
        raise FormatError(
            f"{self.label}: varint for {what} is longer than 10 bytes", hint=_HINT_CORRUPT
        )

    def key(self, end: int) -> tuple[int, int]:
        k = self.varint("field key")
        field, wt = k >> 3, k & 7
        if field == 0 or wt not in (_WT_VARINT, _WT_I64, _WT_LEN, _WT_I32):
            raise FormatError(
                f"{self.label}: invalid protobuf field key {k} at offset {self.r.pos}",
                hint=_HINT_CORRUPT,
            )
        return field, wt

    def length(self, end: int, what: str) -> int:
        n = self.varint(f"length of {what}")
        if self.r.pos + n > end:
            raise FormatError(
                f"{self.label}: {what} claims {n} bytes at offset {self.r.pos}, past the end of "
                f"its enclosing message (offset {end})",
                hint="the file is truncated or corrupt",
            )
        return n

    def skip(self, wt: int, end: int, what: str) -> None:
        if wt == _WT_VARINT:
            self.varint(what)
        elif wt == _WT_I64:
            self.r.skip(8, what)
        elif wt == _WT_I32:
            self.r.skip(4, what)
        else:
            self.r.skip(self.length(end, what), what)
        if self.r.pos > end:
            raise FormatError(
                f"{self.label}: {what} runs past its enclosing message", hint=_HINT_CORRUPT
            )

    def expect(self, wt: int, want: int, what: str) -> None:
        if wt != want:
            raise FormatError(
                f"{self.label}: {what} has protobuf wire type {wt}, expected {want}",
                hint=_HINT_CORRUPT,
            )

    def string(self, wt: int, end: int, what: str, *, cap: int | None = None) -> str:
        """Read a string field; keep at most ``cap`` bytes (skip the rest), or refuse
        anything over ``_MAX_NAME`` when ``cap`` is None."""
        self.expect(wt, _WT_LEN, what)
        n = self.length(end, what)
        if cap is None:
            if n > _MAX_NAME:
                raise SizeLimitError(
                    f"{self.label}: {what} is {n} bytes long, over the {_MAX_NAME}-byte cap",
                    hint="the file is corrupt or hostile",
                )
            keep = n
        else:
            keep = min(n, cap)
        text = self.r.read(keep, what).decode("utf-8", errors="replace")
        self.r.skip(n - keep, what)
        return text

    def int64(self, wt: int, what: str) -> int:
        self.expect(wt, _WT_VARINT, what)
        v = self.varint(what)
        return v - (1 << 64) if v >= 1 << 63 else v

    # -- messages ------------------------------------------------------------------
    def model(self) -> ModelFileInfo:
        end = self.r.size
        meta: dict[str, MetadataValue] = {}
        tensors: list[TensorInfo] = []
        graph_seen = False
        while self.r.pos < end:
            field, wt = self.key(end)
            if field == 1:
                meta["ir_version"] = self.int64(wt, "ir_version")
            elif field == 2:
                meta["producer_name"] = self.string(wt, end, "producer_name", cap=_KEEP_STRING)
            elif field == 3:
                meta["producer_version"] = self.string(
                    wt, end, "producer_version", cap=_KEEP_STRING
                )
            elif field == 4:
                meta["domain"] = self.string(wt, end, "domain", cap=_KEEP_STRING)
            elif field == 5:
                meta["model_version"] = self.int64(wt, "model_version")
            elif field == 7:
                self.expect(wt, _WT_LEN, "graph")
                n = self.length(end, "graph")
                self.graph(self.r.pos + n, meta, tensors)
                graph_seen = True
            elif field == 8:
                self.expect(wt, _WT_LEN, "opset_import")
                n = self.length(end, "opset_import")
                domain, version = self.opset(self.r.pos + n)
                meta[f"opset.{domain or 'ai.onnx'}"] = version
            elif field == 14:
                self.expect(wt, _WT_LEN, "metadata_props")
                n = self.length(end, "metadata_props")
                k, v = self.string_pair(self.r.pos + n, "metadata_props")
                meta[f"metadata_props.{k}"] = v
            else:
                self.skip(wt, end, f"ModelProto field {field}")
        if "ir_version" not in meta or not graph_seen:
            missing = "ir_version" if "ir_version" not in meta else "graph"
            raise FormatError(
                f"{self.label}: no {missing} in the model: this does not look like an ONNX "
                "ModelProto",
                hint=_HINT_CORRUPT,
            )
        in_file = [t.offset for t in tensors if t.location is None and t.offset >= 0]
        return summarize(
            "onnx",
            tensors,
            header_size=min(in_file) if in_file else self.r.size,
            metadata=meta,
        )

    def opset(self, end: int) -> tuple[str, int]:
        domain, version = "", 0
        while self.r.pos < end:
            field, wt = self.key(end)
            if field == 1:
                domain = self.string(wt, end, "opset domain")
            elif field == 2:
                version = self.int64(wt, "opset version")
            else:
                self.skip(wt, end, "OperatorSetIdProto field")
        self.closed(end, "opset_import")
        return domain, version

    def string_pair(self, end: int, what: str) -> tuple[str, str]:
        k, v = "", ""
        while self.r.pos < end:
            field, wt = self.key(end)
            if field == 1:
                k = self.string(wt, end, f"{what} key")
            elif field == 2:
                v = self.string(wt, end, f"{what} value", cap=_MAX_NAME)
            else:
                self.skip(wt, end, f"{what} field")
        self.closed(end, what)
        return k, v

    def closed(self, end: int, what: str) -> None:
        if self.r.pos != end:
            raise FormatError(
                f"{self.label}: {what} ends at offset {self.r.pos}, expected {end}",
                hint=_HINT_CORRUPT,
            )

    def graph(self, end: int, meta: dict[str, MetadataValue], tensors: list[TensorInfo]) -> None:
        nodes = sparse = 0
        while self.r.pos < end:
            field, wt = self.key(end)
            if field == 1:
                nodes += 1
                self.skip(wt, end, "graph node")
            elif field == 2:
                meta["graph_name"] = self.string(wt, end, "graph name", cap=_KEEP_STRING)
            elif field == 5:
                self.expect(wt, _WT_LEN, "initializer")
                n = self.length(end, "initializer")
                if len(tensors) >= self.max_tensors:
                    raise SizeLimitError(
                        f"{self.label}: more than {self.max_tensors} initializers",
                        hint="raise max_tensors if this file is trusted",
                    )
                tensors.append(self.tensor(self.r.pos + n, len(tensors)))
            elif field == 15:
                sparse += 1
                self.skip(wt, end, "sparse initializer")
            else:
                self.skip(wt, end, f"GraphProto field {field}")
        self.closed(end, "graph")
        meta["node_count"] = nodes
        if sparse:
            meta["sparse_initializer_count"] = sparse

    def tensor(self, end: int, index: int) -> TensorInfo:
        start = self.r.pos
        label = self.label
        dims: list[int] = []
        data_type = 0
        name = ""
        raw: tuple[int, int] | None = None
        typed_offset = -1
        typed_len = 0
        typed_fields: set[int] = set()
        external: dict[str, str] = {}
        location_flag = 0
        while self.r.pos < end:
            field, wt = self.key(end)
            if field == 1:
                if wt == _WT_LEN:
                    sub_end = self.r.pos + self.length(end, "packed dims")
                    while self.r.pos < sub_end:
                        dims.append(self.int64(_WT_VARINT, "dim"))
                    self.closed(sub_end, "packed dims")
                else:
                    dims.append(self.int64(wt, "dim"))
            elif field == 2:
                data_type = self.int64(wt, "data_type")
            elif field == 3:
                raise FormatError(
                    f"{label}: initializer #{index} is split into segments",
                    hint="segmented tensors are not supported (nor loaded by onnx); "
                    "re-export the model",
                )
            elif field == 8:
                name = self.string(wt, end, "tensor name")
            elif field == 9:
                self.expect(wt, _WT_LEN, "raw_data")
                n = self.length(end, "raw_data")
                raw = (self.r.pos, n)
                self.r.skip(n, "raw_data")
            elif field in _TYPED_FIELDS:
                typed_fields.add(field)
                if wt == _WT_LEN:
                    n = self.length(end, "tensor data")
                    if typed_offset < 0 and field != 6:
                        typed_offset = self.r.pos
                    typed_len += n
                    self.r.skip(n, "tensor data")
                else:
                    self.skip(wt, end, "tensor data")
            elif field == 13:
                self.expect(wt, _WT_LEN, "external_data")
                n = self.length(end, "external_data")
                k, v = self.string_pair(self.r.pos + n, "external_data")
                external[k] = v
            elif field == 14:
                location_flag = self.int64(wt, "data_location")
            else:
                self.skip(wt, end, f"TensorProto field {field}")
        self.closed(end, "initializer")
        shown = repr(name) if name else f"#{index} (at offset {start})"
        if data_type not in ONNX_DTYPES:
            raise FormatError(
                f"{label}: initializer {shown} has unknown data_type {data_type}",
                hint="known types: " + ", ".join(n for n, _ in ONNX_DTYPES.values()),
            )
        dtype, bits = ONNX_DTYPES[data_type]
        for d in dims:
            if d < 0:
                raise FormatError(
                    f"{label}: initializer {shown} has negative dimension {d}", hint=_HINT_CORRUPT
                )
        numel = 1
        for d in dims:
            numel *= d
        expected = -(-numel * bits // 8)
        sources = (raw is not None) + bool(typed_fields) + (location_flag == 1 or bool(external))
        if sources > 1:
            raise FormatError(
                f"{label}: initializer {shown} holds its data in more than one place "
                "(raw_data, typed fields, external data)",
                hint="an ONNX tensor stores its values in exactly one field; the file is corrupt",
            )
        if location_flag == 1 or external:
            return self.external_tensor(name, shown, dtype, tuple(dims), expected, bits, external)
        if raw is not None:
            if data_type == 8:
                raise FormatError(
                    f"{label}: STRING initializer {shown} uses raw_data", hint=_HINT_CORRUPT
                )
            if raw[1] != expected:
                raise FormatError(
                    f"{label}: initializer {shown} is {dtype} with dims {dims}, which is "
                    f"{expected} bytes, but raw_data holds {raw[1]}",
                    hint="dims, data_type and raw_data disagree; the file is corrupt",
                )
            return TensorInfo(name, dtype, tuple(dims), raw[0], raw[1])
        if typed_fields:
            nbytes = typed_len if data_type == 8 else expected
            return TensorInfo(name, dtype, tuple(dims), typed_offset, nbytes)
        if numel:
            raise FormatError(
                f"{label}: initializer {shown} has {numel} elements but no data",
                hint=_HINT_CORRUPT,
            )
        return TensorInfo(name, dtype, tuple(dims), -1, 0)

    def external_tensor(
        self,
        name: str,
        shown: str,
        dtype: str,
        dims: tuple[int, ...],
        expected: int,
        bits: int,
        external: dict[str, str],
    ) -> TensorInfo:
        label = self.label
        location = external.get("location", "")
        _check_location(location, label, shown)
        try:
            offset = int(external.get("offset", "0"))
            length = int(external["length"]) if "length" in external else expected
        except ValueError:
            raise FormatError(
                f"{label}: initializer {shown} has external offset/length "
                f"{external.get('offset')!r}/{external.get('length')!r}, not integers",
                hint=_HINT_CORRUPT,
            ) from None
        if offset < 0 or length < 0:
            raise FormatError(
                f"{label}: initializer {shown} has a negative external offset or length",
                hint=_HINT_CORRUPT,
            )
        if bits and length != expected:
            raise FormatError(
                f"{label}: initializer {shown} is {dtype} with dims {list(dims)}, which is "
                f"{expected} bytes, but its external data length is {length}",
                hint="dims, data_type and external length disagree; the file is corrupt",
            )
        return TensorInfo(name, dtype, dims, offset, length, location=location)


def _check_location(location: str, label: str, shown: str) -> None:
    if not location:
        raise FormatError(
            f"{label}: initializer {shown} is stored externally but names no location",
            hint=_HINT_CORRUPT,
        )
    parts = location.split("/")
    if (
        "\x00" in location
        or "\\" in location
        or location.startswith("/")
        or (len(location) > 1 and location[1] == ":")
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UnsafeContentError(
            f"{label}: initializer {shown} points at external data {location!r}, "
            "outside the model directory",
            hint="external data must be a relative path inside the model directory "
            "(no '..', no absolute path, no backslash)",
        )


def parse_onnx(
    source: RangeSource,
    *,
    name: str = "",
    max_scan: int = DEFAULT_MAX_SCAN,
    max_tensors: int = 1 << 20,
) -> ModelFileInfo:
    """Parse an ONNX ModelProto without the ``onnx`` package.

    Tensors are the graph initializers, in file order. For in-file data
    ``offset`` is the absolute offset of ``raw_data`` (or of the packed typed
    field; -1 for unpacked or absent data); for external data ``location`` is
    the relative file name and ``offset`` the offset in that file.
    ``header_size`` is the offset of the first in-file tensor payload (the file
    size when there is none). ``metadata`` holds ``ir_version``,
    ``producer_name``, ``opset.<domain>``, ``graph_name``, ``node_count`` and
    ``metadata_props.<key>``.
    """
    return _Walker(source, name or "ONNX file", max_scan, max_tensors).model()
