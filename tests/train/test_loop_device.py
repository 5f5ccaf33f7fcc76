"""Steps of the training loop and a checkpoint's evaluation on a fake accelerator
(`tests.device_harness`): datasets held on the host, the model on the device; no tensor made
on the CPU but the batches' row indices, no host sync inside a step, and the checkpoint's
reads (logged values, accuracies, curvature diagnostics) all of device tensors."""

import pytest
import torch
from tests.device_harness import DEVICE, build, host, on_fake_device

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams
from dgalign.data.base import TensorEnvironment
from dgalign.data.splits import InfiniteLoader, Subset
from dgalign.train import loop
from dgalign.train.diagnostics import curvature_diagnostics
from dgalign.train.evaluate import Evaluator
from dgalign.train.logs import LogWindow

SHAPE = (3, 28, 28)
#: Made on the host on purpose: each batch's row indices, drawn from the seeded CPU stream
#: (the same batches on every device), then copied over asynchronously; a split's rows,
#: gathered once to be copied to the device.
HOST_SITES = frozenset({"indices", "device_rows"})


def _splits():
    g = torch.Generator().manual_seed(0)
    envs = [
        TensorEnvironment(torch.randn(40, *SHAPE, generator=g), torch.randint(0, 2, (40,)))
        for _ in range(3)
    ]
    return [(Subset(e, list(range(30))), Subset(e, list(range(30, 40)))) for e in envs]


def _on_host(split: Subset) -> None:
    env = split.dataset
    env.x, env.y, split.keys = host(env.x), host(env.y), host(split.keys)


@pytest.mark.parametrize("name", ["ERM", "HessianDiag", "CMA", "FGMix"])
def test_loop_steps_and_a_checkpoint_on_the_device(name):
    torch.set_num_threads(1)
    hparams = default_hparams(name, "Debug28") | {"backbone": "mlp", "mlp_width": 16}
    hparams.update(batch_size=8, penalty_anneal_iters=0, start_step=0, mixup_batch=8)
    hparams = {k: v for k, v in hparams.items() if k in default_hparams(name, "Debug28")}
    splits = _splits()
    with on_fake_device() as report:
        for pair in splits:
            for split in pair:
                _on_host(split)
        algorithm = build(algorithms.get(name), SHAPE, 2, 2, hparams)
        loaders = [InfiniteLoader(splits[i][0], 8, 0, i, DEVICE) for i in (0, 1)]
        window = LogWindow()
        for step in range(3):
            if step == 1:
                report.syncs.clear()  # the first step may check its inputs once
            values, minibatches = loop._step(
                algorithm, loaders, None, None, None, step, DEVICE, "fp32"
            )
            window.add(step, values)
        step_syncs = list(report.syncs)
        means = window.means()
        named = {
            f"env{i}_{k}": s for i, p in enumerate(splits) for k, s in zip("io", p, strict=True)
        }
        accuracies = Evaluator(named, DEVICE).accuracies(algorithm)
        diagnostics = curvature_diagnostics(algorithm, minibatches)
    assert report.wrong_device(HOST_SITES) == []
    assert step_syncs == []
    assert "loss" in means and set(accuracies) == set(named)
    assert set(diagnostics) == {"hess_dist", "grad_dist"}
    assert minibatches[0][0].device == DEVICE
