"""JSON in and out: one strict reader for what others wrote, one canonical writer.

Reading (:func:`loads_strict`). Everything modelreg parses from outside (manifests,
indexes, configs, bundles, the store's ``index.json``, a docker config) goes through
one reader that refuses what tools read differently from one another:

* a key twice in one object: one tool takes the first, another the last, so a
  signature checked over one reading could vouch for the other;
* ``NaN``, ``Infinity``, ``-Infinity``: Python accepts them, JSON does not;
* more than the caller's ``max_bytes`` (checked before parsing, which holds the
  whole document in memory), and nesting deep enough to exhaust the stack.

Every refusal is a :class:`~modelreg.errors.FormatError` (:class:`SizeLimitError`
for the size) that names what was parsed (``what``), with the caller's ``hint``
(a duplicate key has a hint of its own: that one says what to do).

Writing (:func:`canonical_json`): compact (no whitespace), UTF-8, non-ASCII
characters written as themselves, keys in the order given (manifests keep the
field order of the specification) or sorted with ``sort_keys``. The same value
always gives the same bytes, which is what digests over it need. It is not RFC 8785
(JCS): that also fixes number formatting and sorts keys by UTF-16 code units; no
format modelreg writes asks for it.

Lists of objects (:func:`object_list`): a signed document's list (an envelope's
signatures, a statement's subjects) must be there, not empty, capped before any item
is looked at (a document could carry millions), and hold only objects.

Result types (:func:`camel_fields`). Every ``to_dict`` writes its JSON keys in
camelCase and its attributes are snake_case; one function derives the key from the
attribute's name, so the two cannot drift apart and a ``to_dict`` lists only the
names (in the order the JSON shows them), spelling out by hand just the keys that
are not a plain copy of one attribute.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modelreg.errors import FormatError, SizeLimitError

__all__ = ["camel_fields", "canonical_json", "loads_strict", "object_list"]


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def loads_strict(
    data: str | bytes,
    *,
    what: str,
    max_bytes: int | None = None,
    hint: str | None = None,
) -> Any:
    """Parse one JSON document refusing duplicate keys and NaN/Infinity.

    ``what`` names the document in errors ("manifest sha256:…", "docker config
    /home/u/.docker/config.json"); ``max_bytes`` caps its encoded size."""
    if max_bytes is not None and len(data) > max_bytes:
        raise SizeLimitError(
            f"{what} is {len(data)} bytes, over the {max_bytes}-byte limit", hint=hint
        )
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _DuplicateKeyError as exc:
        raise FormatError(
            f"{what} has the key {str(exc)!r} more than once",
            hint="duplicate keys are ambiguous (tools disagree on which one wins); "
            "rewrite the file with unique keys",
        ) from None
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"{what} is not valid UTF-8 ({exc.reason} at byte {exc.start})", hint=hint
        ) from None
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{what} is not valid JSON: {exc}", hint=hint) from None


def canonical_json(obj: Any, *, sort_keys: bool = False) -> bytes:
    """Deterministic JSON bytes: no whitespace, UTF-8, keys as given or sorted."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys).encode(
        "utf-8"
    )


def object_list(
    obj: Mapping[str, Any], key: str, *, what: str, limit: int, counted: str
) -> list[Mapping[str, Any]]:
    """``obj[key]`` as a non-empty list of at most ``limit`` JSON objects, else FormatError.

    ``counted`` words the count in the over-the-limit message ("lists {} subjects")."""
    items = obj.get(key)
    if not isinstance(items, list) or not items:
        raise FormatError(f"{what}: {key} must be a non-empty list")
    if len(items) > limit:
        raise FormatError(f"{what} {counted.format(len(items))} (limit {limit})")
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise FormatError(f"{what}: {key}[{i}] must be an object")
    return items


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def camel_fields(obj: object, *names: str) -> dict[str, Any]:
    """``{"bundleDigest": obj.bundle_digest, ...}`` for each attribute ``names``, in order.

    A value is copied as it is: a tuple or a nested result is the caller's to convert."""
    return {_camel(name): getattr(obj, name) for name in names}
