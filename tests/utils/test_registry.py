"""The registry shared by algorithms, datasets, backbones, launchers and selection methods."""

from __future__ import annotations

import pytest
import torch

from dgalign import algorithms
from dgalign.data import DATASETS, get_dataset_class, register_dataset
from dgalign.errors import ConfigError
from dgalign.networks import BACKBONES, build_featurizer, register_backbone
from dgalign.selection import SELECTION_METHODS, get_methods
from dgalign.sweep.launchers import LAUNCHERS, LauncherOptions, make_launcher, register_launcher
from dgalign.utils.registry import Registry, RegistryError


def test_register_get_names_describe():
    reg: Registry[type] = Registry("widget", required=("run",))

    @reg.register
    class A:
        """First widget.

        More text."""

        run = 1

    reg.register(type("B", (), {"run": 2}), name="b", description="second")
    assert reg.get("A") is A
    assert reg.names() == ["A", "b"]
    assert reg.describe() == [("A", ""), ("b", "second")]
    assert "A" in reg and len(reg) == 2
    with pytest.raises(ConfigError, match=r"^unknown widget 'c'; valid names: A, b \("):
        reg.get("c")


def test_contract_failure_is_one_line_naming_what_is_missing():
    reg: Registry[type] = Registry("widget", required=("run", "stop"), fix="add them")
    with pytest.raises(RegistryError) as info:
        reg.register(type("Bad", (), {"run": 1}))
    message = str(info.value)
    assert "\n" not in message
    assert "cannot register widget 'Bad'" in message and "lacks stop; add them" in message


def test_same_name_two_objects_is_refused():
    reg: Registry[object] = Registry("widget")
    reg.register(len, name="x")
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register(print, name="x")


def test_algorithm_contract():
    class NoPredict(torch.nn.Module):
        def update(self, minibatches, unlabeled=None):
            return {}

    with pytest.raises(RegistryError) as info:
        algorithms.register(NoPredict)
    message = str(info.value)
    assert "lacks predict, hparam_space, extra_state, load_extra_state" in message
    assert "register_domainbed" in message
    assert "NoPredict" not in algorithms.names()

    class Half(algorithms.Algorithm):
        def update(self, minibatches):
            return {}

    with pytest.raises(RegistryError, match="does not implement predict"):
        algorithms.register(Half)


def test_builtin_registries_are_filled():
    assert algorithms.names()[:3] == ["ERM", "IRM", "VREx"]
    assert algorithms.ALGORITHMS.describe()[0][1].startswith("Empirical risk")
    assert get_dataset_class("Debug28") is DATASETS.get("Debug28")
    assert BACKBONES.names()[:2] == ["mnist_cnn", "mlp"]
    assert LAUNCHERS.names() == ["local", "ray", "slurm", "dummy"]
    assert SELECTION_METHODS.names() == ["training", "loo", "oracle", "autolr"]
    assert len(get_methods("all")) == 3


def test_register_a_dataset_backbone_and_launcher():
    class Tiny(DATASETS.get("Debug28")):
        """A registered copy of Debug28."""

    try:
        register_dataset(Tiny, name="TinyCopy")
        assert get_dataset_class("TinyCopy") is Tiny
        with pytest.raises(RegistryError, match="has no ENVIRONMENTS"):
            register_dataset(type("Empty", (), {}))
    finally:
        DATASETS.unregister("TinyCopy")

    @register_backbone(name="linear4")
    def linear4(input_shape, hparams):
        """a linear map to 4 features"""
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))
        net.n_outputs = 4
        return net

    try:
        assert build_featurizer((2, 3), {"backbone": "linear4"}).n_outputs == 4
        assert ("linear4", "a linear map to 4 features") in BACKBONES.describe()
    finally:
        BACKBONES.unregister("linear4")
    with pytest.raises(ConfigError, match="unknown backbone 'nope'; valid names: mnist_cnn"):
        build_featurizer((2, 3), {"backbone": "nope"})

    made = []

    @register_launcher(name="recorder")
    def recorder(options, out):
        made.append(options)
        return "launcher"

    try:
        assert make_launcher("recorder", LauncherOptions()) == "launcher" and len(made) == 1
    finally:
        LAUNCHERS.unregister("recorder")
    with pytest.raises(ConfigError, match="unknown launcher 'lsf'; valid launchers: local"):
        make_launcher("lsf", LauncherOptions())
