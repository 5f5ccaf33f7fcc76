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


HOLDER = """
import sys
from pathlib import Path
from dgalign.train.lock import try_lock
held = try_lock(Path(sys.argv[1]))
print("held" if held else "busy", flush=True)
sys.stdin.read()
"""


def start_holder(path):
    """A process that takes the lock on `path` and holds it until its stdin closes (or it is
    killed); returns the Popen once the lock is held."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc
