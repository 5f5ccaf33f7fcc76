"""A run directory's identity: written once, resumed when equal, refused in one line otherwise,
for training runs (`run.json`) and reproductions (`config.json`, under `identity`)."""

import json

import pytest

from dgalign.errors import RunDirError
from dgalign.runs.identity import (
    REPRODUCTION,
    TRAINING,
    claim_identity,
    differing_keys,
    is_reproduction,
    read_identity,
)


def test_a_training_identity_is_written_once_then_compared(tmp_path):
    claim_identity(tmp_path, {"seed": 0, "steps": 5})
    assert json.loads((tmp_path / "run.json").read_text()) == {"seed": 0, "steps": 5}
    claim_identity(tmp_path, {"seed": 0, "steps": 5})  # the same run: resumed
    with pytest.raises(RunDirError, match=r"holds a different run \(differs in seed, steps\)"):
        claim_identity(tmp_path, {"seed": 1, "steps": 6})
    assert read_identity(tmp_path) == {"seed": 0, "steps": 5}


def test_results_without_an_identity_are_refused_unless_restarting(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text("{}\n")
    with pytest.raises(RunDirError, match=r"results of an unknown run .*--restart-from-scratch"):
        claim_identity(tmp_path, {"seed": 0}, orphans=[results])
    assert not (tmp_path / "run.json").exists()
    claim_identity(tmp_path, {"seed": 0}, orphans=[results], restart=True)
    assert read_identity(tmp_path) == {"seed": 0}


@pytest.mark.parametrize("content", ["[]", "{not json", ""])
def test_an_unreadable_identity_is_refused_unless_restarting(tmp_path, content):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(RunDirError, match=r"run\.json is unreadable or not a JSON object"):
        claim_identity(tmp_path, {"seed": 0})
    claim_identity(tmp_path, {"seed": 0}, restart=True)
    assert read_identity(tmp_path, TRAINING) == {"seed": 0}


def test_a_reproduction_keeps_its_identity_under_a_key(tmp_path):
    assert not is_reproduction(tmp_path) and read_identity(tmp_path, REPRODUCTION) is None
    ident = {"seed": 0, "quick": True}
    claim_identity(tmp_path, ident, REPRODUCTION, extra={"quick": True})
    assert json.loads((tmp_path / "config.json").read_text()) == {"identity": ident, "quick": True}
    assert is_reproduction(tmp_path) and read_identity(tmp_path, REPRODUCTION) == ident
    claim_identity(tmp_path, ident, REPRODUCTION)
    with pytest.raises(RunDirError, match=r"holds results of other settings \(differs in seed\)"):
        claim_identity(tmp_path, {**ident, "seed": 1}, REPRODUCTION)


def test_a_config_json_without_an_identity_is_not_a_reproduction(tmp_path):
    (tmp_path / "config.json").write_text('{"quick": true}')
    assert not is_reproduction(tmp_path)
    assert read_identity(tmp_path, REPRODUCTION) == {}
    with pytest.raises(RunDirError, match="other settings"):
        claim_identity(tmp_path, {"seed": 0}, REPRODUCTION)
    (tmp_path / "config.json").write_text("[1]")
    assert not is_reproduction(tmp_path)


def test_differing_keys_counts_missing_keys():
    assert differing_keys({"a": 1, "b": 2}, {"a": 1, "c": None}) == ["b"]
    assert differing_keys({"a": 1}, {"a": 2, "c": 3}) == ["a", "c"]
