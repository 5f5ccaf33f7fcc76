"""Run states read from run directories, and a launcher's claims."""

import json
import os
import socket
import subprocess
import sys

from dgalign.runs.launch import CLAIM_FILE, claim_launch, live_claim, record_attempt, release_launch
from dgalign.runs.lock import run_lock
from dgalign.runs.state import JobState, run_state

HOLDER = """
import sys
from pathlib import Path
from dgalign.runs.lock import try_lock
held = try_lock(Path(sys.argv[1]))
print("held" if held else "busy", flush=True)
sys.stdin.read()
"""


def start_holder(path, expect="held"):
    """A process that tries to take the lock on `path` and holds it (if it got it) until its
    stdin closes; returned once it has said whether it got it (`expect`)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == expect
    return proc


def stale_lock(path, name="lock"):
    """The file a SIGKILLed owner leaves: its record, but no lock held on it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps({"host": socket.gethostname(), "pid": 1}))


def test_states(tmp_path):
    run = tmp_path / "run"
    assert run_state(run) is JobState.NOT_LAUNCHED
    run.mkdir()
    assert run_state(run) is JobState.NOT_LAUNCHED  # an empty directory: nothing ran
    (run / "run.json").write_text("{}")
    assert run_state(run) is JobState.INCOMPLETE
    with run_lock(run):
        assert run_state(run) is JobState.RUNNING
    stale_lock(run)  # a SIGKILLed run leaves its lock file behind: the kernel dropped the lock
    assert run_state(run) is JobState.INCOMPLETE
    for content in ("{}", "123", '{"pid": "abc"}', ""):  # whatever the file says
        (run / "lock").write_text(content)
        assert run_state(run) is JobState.INCOMPLETE
    (run / "lock").unlink()
    (run / "err.txt").write_text("Traceback (most recent call last):\nValueError: x\n")
    assert run_state(run) is JobState.FAILED  # DomainBed's runs: an error in err.txt
    record_attempt(run, "interrupted", "local")
    assert run_state(run) is JobState.INCOMPLETE  # the last recorded attempt wins
    record_attempt(run, "failed", "local", "exit code 1")
    assert run_state(run) is JobState.FAILED
    assert json.loads((run / "job.json").read_text())["attempts"] == 2
    (run / "done").write_text("done\n")
    assert run_state(run) is JobState.DONE


def test_launch_claims(tmp_path):
    run = tmp_path / "run"
    assert claim_launch(run, "local")  # creates the directory
    assert live_claim(run)["pid"] == os.getpid() and run_state(run) is JobState.RUNNING
    holder = start_holder(run / CLAIM_FILE, expect="busy")  # another process cannot claim it
    holder.stdin.close()
    holder.wait()
    release_launch(run)
    assert not (run / CLAIM_FILE).exists() and run_state(run) is JobState.NOT_LAUNCHED
    stale_lock(run, CLAIM_FILE)  # left by a SIGKILLed launcher: nothing holds it
    assert live_claim(run) is None and claim_launch(run, "local")
    release_launch(run)
