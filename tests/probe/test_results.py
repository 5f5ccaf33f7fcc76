"""Per-seed records on disk (resume, refusing mixed configurations) and the tables."""

from __future__ import annotations

import csv
import io

import pytest

from dgalign.errors import DataError, RunDirError
from dgalign.probe.results import collect, read_records, render, train_probe
from dgalign.probe.train import ProbeConfig


def test_seeds_resume_and_other_configurations_are_refused(feature_dir, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    config = ProbeConfig("ERM", epochs=2, batch_size=40)
    first = train_probe(feature_dir, config, [0, 1], out)
    assert [r["seed"] for r in first] == [0, 1]
    assert (out / "ERM.jsonl").is_file()
    from dgalign.probe import results

    ran = []
    original = results.run_seed
    monkeypatch.setattr(results, "run_seed", lambda fs, c, s: ran.append(s) or original(fs, c, s))
    again = train_probe(feature_dir, config, [0, 1, 2], out)
    assert ran == [2] and [r["seed"] for r in again] == [0, 1, 2]
    assert again[:2] == first
    with pytest.raises(RunDirError, match="another configuration"):
        train_probe(feature_dir, ProbeConfig("ERM", epochs=3, batch_size=40), [0], out)
    train_probe(feature_dir, ProbeConfig("ERM", epochs=3, batch_size=40), [0], out, name="ERM-3")
    assert set(collect([out])) == {"ERM", "ERM-3"}


def test_tables_show_mean_and_population_std_in_percent():
    records = {
        "A": [
            {
                "test_worst": w,
                "test_avg": 0.9,
                "val_worst": 0.5,
                "last_test_worst": 0.4,
                "selected_epoch": e,
                "seconds": 2.0,
            }
            for w, e in ((0.6, 3), (0.8, 5))
        ],
    }
    text = render(records)
    assert "| A | 2 | 70.0 +- 10.0 | 90.0 +- 0.0 | 50.0 +- 0.0 | 40.0 +- 0.0 | 4 | 2 |" in text
    rows = list(csv.DictReader(io.StringIO(render(records, "csv"))))
    assert rows[0]["method"] == "A" and float(rows[0]["test_worst_std"]) == pytest.approx(10.0)


def test_bad_result_paths_fail_with_one_line(tmp_path):
    with pytest.raises(DataError, match="no probing results"):
        collect([tmp_path])
    bad = tmp_path / "x.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match=r"x\.jsonl:1 is not a JSON record"):
        read_records(bad)
