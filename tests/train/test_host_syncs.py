"""No host sync between checkpoints: the training steps of the loop read no tensor value.

A real CPU run with every host read of a tensor (`item`, `tolist`, `bool`, `int`, `float`,
`index`, `cpu`, `numpy`) counted when code outside torch makes it (torch's optimisers read
their own host-side step counters), inside the loop's step (minibatches, update, weight
averages); the checkpoint reads once what the steps logged. The
same property on a (fake) accelerator, where torch's own reads count too, is checked per
algorithm by tests/test_device_harness.py and per reproduction row by
tests/experiments/test_cmnist_train_device.py.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from dgalign.algorithms.erm import ERM
from dgalign.algorithms.registry import _REGISTRY
from dgalign.algorithms.spaces import default_hparams
from dgalign.train import RunConfig, loop, run_training

TORCH = str(Path(torch.__file__).resolve().parent)
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")
METHODS = ("ERM", "HGP", "Hutchinson", "HessianDiag", "CMA", "Fishr", "FGMix")
#: Reads made only for CPU tensors (a label range check; on a GPU one_hot's device-side
#: assert does it), so never a device sync.
CPU_ONLY = ("curvature/_checks.py (targets)",)


class _Reads:
    """Counts host reads of tensors made outside torch while `active`."""

    def __init__(self) -> None:
        self.active = False
        self.sites: list[str] = []

    def wrap(self, name: str):
        original = getattr(torch.Tensor, name)

        def counted(tensor, *args, **kwargs):
            if self.active:
                caller = sys._getframe(1)
                if not caller.f_code.co_filename.startswith(TORCH):
                    code = caller.f_code
                    self.sites.append(f"{name} at {code.co_filename} ({code.co_name})")
            return original(tensor, *args, **kwargs)

        return counted


def _counted_steps(monkeypatch, reads: _Reads) -> list[int]:
    """Make the loop's `_step` count the reads made inside it; returns the list of steps."""
    step, steps = loop._step, []

    def counted_step(*args, **kwargs):
        reads.active = True
        try:
            return step(*args, **kwargs)
        finally:
            reads.active = False
            steps.append(1)

    monkeypatch.setattr(loop, "_step", counted_step)
    return steps


def _config(tmp_path, fast_hparams, name, **extra):
    own = set(default_hparams(name, "Spurious28")) if name in _REGISTRY else set()
    hparams = json.loads(fast_hparams) | {k: v for k, v in extra.items() if k in own}
    return RunConfig(
        dataset="Spurious28",
        algorithm=name,
        output_dir=str(tmp_path / name),
        test_envs=[2],
        hparams=json.dumps(hparams),
        steps=6,
        checkpoint_freq=3,
    )


@pytest.mark.parametrize("name", METHODS)
def test_no_host_read_between_checkpoints(name, tmp_path, fast_hparams, monkeypatch):
    reads = _Reads()
    for attr in READS:
        monkeypatch.setattr(torch.Tensor, attr, reads.wrap(attr))
    steps = _counted_steps(monkeypatch, reads)
    # the penalised branches (and FGMix's mixing) from step 2 on
    config = _config(
        tmp_path, fast_hparams, name, penalty_anneal_iters=2, start_step=2, mixup_batch=8
    )
    records = run_training(config, progress=False).records
    assert len(steps) == 6 and [r["step"] for r in records] == [0, 3, 5]
    assert [s for s in reads.sites if not s.endswith(CPU_ONLY)] == []
    assert all(isinstance(r["loss"], float) for r in records)


class PlantedRead(ERM):
    DESCRIPTION = "test only"

    def update(self, minibatches):
        return {"loss": super().update(minibatches)["loss"].item()}  # the bug


def test_a_planted_read_is_counted(tmp_path, fast_hparams, monkeypatch):
    """The counter sees a `.item()` in an update (the bug it is there to catch)."""
    monkeypatch.setitem(_REGISTRY, "PlantedRead", PlantedRead)
    reads = _Reads()
    monkeypatch.setattr(torch.Tensor, "item", reads.wrap("item"))
    _counted_steps(monkeypatch, reads)
    run_training(_config(tmp_path, fast_hparams, "PlantedRead"), progress=False)
    assert len(reads.sites) == 6 and "test_host_syncs.py" in reads.sites[0]
