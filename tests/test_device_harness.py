"""Device correctness without a GPU (`tests.device_harness`): every algorithm's `update` and
`predict` with its model and data on a fake accelerator, making no CPU tensor and, after the
first step, making the host wait for the device nowhere; a planted CPU tensor and a planted
sync the harness must report."""

import pytest
import torch
from tests.device_harness import DEVICE, build, moved_leftovers, on_fake_device

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams

#: Functions that draw on the host on purpose: the result is a Python value (an order of the
#: domains or layers, one mixing weight), never a device tensor.
HOST_DRAWS = frozenset(
    {"random_pairs", "meta_pairs", "project_conflicting", "forward", "sample_beta"}
)
#: Algorithms using an op whose output shape depends on the data that the fake tensors cannot
#: model: covered by their CPU tests (tests/algorithms) and the through-loop test instead.
UNMODELLED = {"SelfReg": "torch.unique in same_class_permutation"}
#: Algorithms whose step sizes tensors by the data (the host waits for the device each step):
#: a choice of rows by boolean masks, a loop over the classes a batch holds.
SYNCING = {
    "CAD": "boolean selection of the anchors with a positive pair",
    "CondCAD": "boolean selection of the anchors with a positive pair",
    "ADRMX": "per-class loop over the examples of each class (remix_loss)",
}
SHAPES = {"mlp": (3, 28, 28), "mnist_cnn": (2, 28, 28), "resnet18": (3, 32, 32)}
#: The algorithms run with the ResNet-18 backbone too (every one runs with the other two; a
#: ResNet step under fake tensors costs seconds): the plain path, a head-curvature penalty and
#: the latent mixing, which make tensors inside `update`.
RESNET = ("ERM", "HessianDiag", "FGMix")


def _hparams(name: str, backbone: str) -> dict:
    dataset = {"mlp": "Debug28", "mnist_cnn": "ColoredMNIST"}.get(backbone, "PACS")
    hparams = default_hparams(name, dataset) | {"backbone": backbone, "batch_size": 8}
    hparams["pretrained"] = False
    hparams["mlp_width"] = 16
    for key in ("penalty_anneal_iters", "start_step"):  # the penalised branch from step 0
        if key in hparams:
            hparams[key] = 0
    if "d_steps_per_g" in hparams:  # Transfer: one ascent step shows its device use as ten do
        hparams["d_steps_per_g"] = 1
    return hparams


@pytest.mark.parametrize("backbone", ["mlp", "mnist_cnn"])
@pytest.mark.parametrize("name", sorted(UNMODELLED))
def test_unmodelled_algorithms_leave_no_tensor_behind(name, backbone):
    """What the harness can check of an algorithm whose ops fake tensors cannot run
    (`UNMODELLED`; their update runs on the CPU in their own tests and the loop test): no
    tensor attribute that `Module.to` would leave on the CPU."""
    torch.manual_seed(0)
    shape, hparams = SHAPES[backbone], _hparams(name, backbone)
    assert moved_leftovers(algorithms.get(name)(shape, 2, 2, hparams)) == []


def _fake_batches(shape, n_domains=2, n=8):
    return [
        (torch.randn(n, *shape, device=DEVICE), torch.randint(0, 2, (n,), device=DEVICE))
        for _ in range(n_domains)
    ]


CASES = [
    (name, backbone)
    for backbone in SHAPES
    for name in algorithms.names()
    if name not in UNMODELLED and (backbone != "resnet18" or name in RESNET)
]


@pytest.mark.parametrize(("name", "backbone"), CASES)
def test_update_and_predict_stay_on_the_device(name, backbone):
    torch.set_num_threads(1)
    shape, hparams = SHAPES[backbone], _hparams(name, backbone)
    torch.manual_seed(0)
    assert moved_leftovers(algorithms.get(name)(shape, 2, 2, hparams)) == []
    with on_fake_device() as report:
        algorithm = build(algorithms.get(name), shape, 2, 2, hparams)
        batches = _fake_batches(shape)
        algorithm.update(batches)
        report.syncs.clear()  # the first step may check its inputs once
        values = algorithm.update(batches)
        algorithm.eval()
        logits = algorithm.predict(batches[0][0])
    assert report.wrong_device(HOST_DRAWS) == []
    assert name in SYNCING or report.syncs == []
    assert logits.device == DEVICE and logits.shape == (8, 2)
    assert all(not torch.is_tensor(v) or v.device == DEVICE for v in values.values())


def test_a_planted_cpu_tensor_is_reported():
    """The harness fails code that makes a tensor on the CPU beside a model on the device."""

    def planted(x):
        noise = torch.randn(x.shape)  # the bug: no device=x.device
        return x + noise.to(x.device)

    with on_fake_device() as report:
        planted(torch.zeros(4, 3, device=DEVICE))
    assert len(report.wrong_device()) == 1 and "planted" in report.wrong_device()[0]


def test_mixing_a_cpu_tensor_with_a_device_tensor_fails():
    with on_fake_device(), pytest.raises(RuntimeError, match="same device"):
        torch.zeros(4, 3, device=DEVICE) + torch.ones(4, 3)


def test_an_attribute_that_to_does_not_move_is_reported():
    class Stray(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.scale = torch.ones(2)  # not a buffer: Module.to leaves it on the CPU

    assert moved_leftovers(Stray()) == ["Stray.scale"]


def test_a_planted_sync_is_reported():
    """A scalar read, a copy to the host and a data-sized op on the device are syncs."""
    with on_fake_device() as report:
        x = torch.zeros(4, 3, device=DEVICE)
        if x.sum() > 0:  # the bug: the host waits for the sum
            pass
        x.cpu()
        x[x > 0]
        torch.ones(3).sum().item()  # a CPU tensor's read is not a sync
    assert len(report.syncs) == 3 and "test_a_planted_sync" in report.syncs[0]


def test_scalar_reads_are_answered_and_counted():
    with on_fake_device() as report:
        x = torch.zeros(3, device=DEVICE)
        assert float(x.sum()) == 0.5 and bool(x.any()) is False and int(x.long().sum()) == 1
    assert report.scalar_reads == 3


@pytest.mark.parametrize("kind", ["unit", "filter"])
def test_flatness_directions_follow_the_weights(kind):
    """Directions are drawn on the CPU from a seeded generator (the same on every device) and
    moved to the weights' device before they meet them."""
    from dgalign.analysis.flatness import random_direction
    from dgalign.analysis.surface import get_vector, set_vector

    hparams = _hparams("ERM", "mlp")
    with on_fake_device() as report:
        algorithm = build(algorithms.get("ERM"), SHAPES["mlp"], 2, 2, hparams)
        direction = random_direction(algorithm, kind, torch.Generator().manual_seed(0))
        set_vector(algorithm, get_vector(algorithm) + 0.1 * direction)
    assert direction.device == DEVICE
    assert report.wrong_device(frozenset({"random_direction"})) == []
