"""Helpers shared by the training tests."""

from __future__ import annotations

TIMING_FIELDS = {"step_time", "mem_gb"}


def strip_run_specific(records: list[dict]) -> list[dict]:
    """Records without measured wall time and memory and without the output dir (differs per
    run), so two runs of the same configuration compare equal."""
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k not in TIMING_FIELDS}
        r["args"] = {k: v for k, v in r["args"].items() if k != "output_dir"}
        out.append(r)
    return out
