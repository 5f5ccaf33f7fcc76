"""Helpers shared by the training tests."""

from __future__ import annotations

import subprocess
import sys

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
from dgalign.runs.lock import try_lock
held = try_lock(Path(sys.argv[1]))
print("held" if held else "busy", flush=True)
sys.stdin.read()
"""


def start_holder(path):
    """A process that takes the lock on `path` and holds it until its stdin closes (or it is
    killed); returns the Popen once the lock is held."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


PAUSED_CLI = """
import sys
from dgalign.runs import lock
stage = sys.argv[1]
def hook(name, path):
    if name == stage and path.name == "lock":
        print("paused", flush=True)
        sys.stdin.readline()
lock.hook = hook
from dgalign.cli import main
sys.exit(main(sys.argv[2:]))
"""


def train_argv(out_dir, fast_hparams, *extra):
    """`dgalign train` of a 6-step Spurious28 ERM run (records at steps 0, 2, 4, 5)."""
    return [
        "train",
        "--dataset",
        "Spurious28",
        "--algorithm",
        "ERM",
        "--test-envs",
        "2",
        "--output-dir",
        str(out_dir),
        "--hparams",
        fast_hparams,
        "--steps",
        "6",
        "--checkpoint-freq",
        "2",
        "--no-progress",
        *extra,
    ]


def paused_cli(stage, argv):
    """`dgalign argv` in a process that pauses when taking a run lock reaches `stage` (see
    `dgalign.runs.lock.hook`); returned paused. Write a line to its stdin to resume it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, stage, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "paused"
    return proc


def run_cli(argv):
    """`python -m dgalign argv`, to completion."""
    return subprocess.run(
        [sys.executable, "-m", "dgalign", *argv], capture_output=True, text=True, timeout=300
    )
