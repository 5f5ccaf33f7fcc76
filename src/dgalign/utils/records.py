"""Records as strict JSON: no `NaN` / `Infinity` tokens, which strict readers reject.

A non-finite float anywhere in a record is written as `null`, and the record gets a key
`nonfinite` mapping the dotted path of each such value to its spelling ("NaN", "Infinity",
"-Infinity"), e.g. `{"hess_dist": null, ..., "nonfinite": {"hess_dist": "Infinity"}}`.
Readers that know the key (ours) restore the floats; others (DomainBed's `json.loads`) see
valid JSON with `null` there. Accuracies are never non-finite (a run with an empty split is
refused), so DomainBed's model selection reads our runs unchanged.
"""

from __future__ import annotations

import math
from typing import Any

NONFINITE_KEY = "nonfinite"


def _spelling(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _encode(value: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        found[path] = _spelling(value)
        return None
    if isinstance(value, dict):
        return {k: _encode(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v, f"{path}.{i}", found) for i, v in enumerate(value)]
    return value


def encode_record(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with every non-finite float replaced by None and listed under `nonfinite`."""
    found: dict[str, str] = {}
    body = {k: v for k, v in record.items() if k != NONFINITE_KEY}
    encoded = _encode(body, "", found)
    if found:
        encoded[NONFINITE_KEY] = found
    return encoded


def _set(target: Any, parts: list[str], value: float) -> None:
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    elif isinstance(target, dict) and last in target:
        target[last] = value


def decode_record(record: dict[str, Any]) -> dict[str, Any]:
    """Undo `encode_record`: the floats listed under `nonfinite` restored, the key removed.
    Entries that do not name a null value are ignored."""
    listed = record.get(NONFINITE_KEY)
    if not isinstance(listed, dict):
        return record
    out = {k: v for k, v in record.items() if k != NONFINITE_KEY}
    values = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    for path, spelling in listed.items():
        if spelling not in values or not isinstance(path, str):
            continue
        try:
            _set(out, path.split("."), values[spelling])
        except (KeyError, IndexError, ValueError, TypeError):
            continue
    return out
