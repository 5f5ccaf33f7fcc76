"""`--task domain_adaptation`, `--uda-holdout-fraction` and `--save-model-every-checkpoint`
with DomainBed's semantics."""

import json

import pytest
import torch

from dgalign.algorithms.erm import ERM
from dgalign.algorithms.registry import _REGISTRY
from dgalign.data import Spurious28
from dgalign.data.splits import split_environment, split_uda
from dgalign.errors import ConfigError
from dgalign.train import RunConfig, run_training

FAST = json.dumps({"backbone": "mlp", "mlp_width": 16, "batch_size": 8})


def _config(tmp_path, **kw):
    args = dict(
        dataset="Spurious28",
        algorithm="ERM",
        output_dir=str(tmp_path / "run"),
        test_envs=[2],
        hparams=FAST,
        steps=6,
        checkpoint_freq=3,
    )
    args.update(kw)
    return RunConfig(**args)


def test_uda_split_is_domainbeds():
    """The uda rows are the first int(n f) of the in split's shuffle seeded by (trial, env)."""
    env = Spurious28()[2]
    in_, _ = split_environment(env, 2, 1, 0.2)
    uda, rest = split_uda(in_, 0.25, 1, 2)
    assert len(uda) == int(len(in_) * 0.25) and len(uda) + len(rest) == len(in_)
    assert not set(uda.keys.tolist()) & set(rest.keys.tolist())
    assert set(uda.keys.tolist()) | set(rest.keys.tolist()) == set(in_.keys.tolist())
    again, _ = split_uda(in_, 0.25, 1, 2)
    assert torch.equal(again.keys, uda.keys)


def test_unlabelled_target_batches_reach_update(tmp_path, monkeypatch):
    seen = []

    class TakesUnlabelled(ERM):
        DESCRIPTION = "test only"

        def update(self, minibatches, unlabeled=None):
            seen.append([tuple(x.shape) for x in unlabeled])
            return super().update(minibatches)

    monkeypatch.setitem(_REGISTRY, "TakesUnlabelled", TakesUnlabelled)
    config = _config(
        tmp_path, algorithm="TakesUnlabelled", task="domain_adaptation", uda_holdout_fraction=0.5
    )
    records = run_training(config, progress=False).records
    assert len(seen) == 6 and all(shapes == [(8, 3, 28, 28)] for shapes in seen)
    assert "env2_uda_acc" in records[0] and "env0_uda_acc" not in records[0]
    assert records[0]["args"]["task"] == "domain_adaptation"


def test_domain_generalization_with_a_uda_fraction_holds_the_same_split_out(tmp_path):
    records = run_training(_config(tmp_path, uda_holdout_fraction=0.5), progress=False).records
    assert "env2_uda_acc" in records[-1]


def test_adaptation_needs_unlabelled_data(tmp_path):
    with pytest.raises(ConfigError, match="uda-holdout-fraction"):
        _config(tmp_path, task="domain_adaptation").validate(3, ("0", "1", "2"))


def test_a_model_file_per_checkpoint(tmp_path):
    run_training(_config(tmp_path, save_model_every_checkpoint=True), progress=False)
    names = sorted(p.name for p in (tmp_path / "run").glob("model_step*.pt"))
    assert names == ["model_step0.pt", "model_step3.pt", "model_step5.pt"]
    saved = torch.load(tmp_path / "run" / "model_step3.pt", weights_only=True)
    assert saved["model_num_classes"] == 2 and "model_dict" in saved


def test_new_options_keep_old_run_identities(tmp_path):
    ident = _config(tmp_path).identity()
    for key in ("swad", "task", "uda_holdout_fraction", "save_model_every_checkpoint"):
        assert key not in ident
    assert _config(tmp_path, swad=True).identity()["swad"] is True
