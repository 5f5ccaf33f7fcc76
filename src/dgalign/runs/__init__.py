"""Run directories: the one layer through which training, sweeps, reproductions, reports and
analyses create, lock, identify and read runs.

- `lock`: kernel (`flock`) locks held for the life of a process; `run_lock(dir)` guards a run.
- `identity`: the settings that define a directory's results (`run.json`, or a reproduction's
  `config.json`), checked under the lock before anything is written.
- `directory`: a training run's files (`RunDirectory`) and readers of runs of any origin.
- `launch`: a sweep launcher's claim (`launch.lock`) and record of attempts (`job.json`).
- `state`: done / running / failed / incomplete / not launched, from the files alone.

This package depends only on `dgalign.errors` and `dgalign.utils`.
"""

from dgalign.runs.directory import RunDirectory, read_results, read_run_json
from dgalign.runs.identity import REPRODUCTION, TRAINING, claim_identity, is_reproduction
from dgalign.runs.lock import LockError, run_lock
from dgalign.runs.state import JobState, count_states, format_counts, run_state

__all__ = [
    "REPRODUCTION",
    "TRAINING",
    "JobState",
    "LockError",
    "RunDirectory",
    "claim_identity",
    "count_states",
    "format_counts",
    "is_reproduction",
    "read_results",
    "read_run_json",
    "run_lock",
    "run_state",
]
