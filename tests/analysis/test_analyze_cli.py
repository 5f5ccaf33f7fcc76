"""`dgalign analyze flatness / surface / latent` on tiny Spurious28 runs: PNGs, JSON, numbers."""

from __future__ import annotations

import json

from dgalign.cli import main


def _png(path):
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flatness_writes_png_and_prints_the_table(runs, tmp_path, capsys):
    out = tmp_path / "flat"
    argv = ["analyze", "flatness", str(runs["erm"]), f"{runs['fgmix']}:swa", "--radii", "0", "1"]
    assert main([*argv, "2", "--n-directions", "2", "--max-samples", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| radius | ERM | FGMix + SWA |" in printed and "original + mixed data" in printed
    _png(out / "flatness.png")
    numbers = json.loads((out / "flatness.json").read_text())
    assert len(numbers["runs"]["ERM"]["gaps"]) == 2


def test_flatness_defaults_to_the_run_directory(runs, capsys):
    argv = ["analyze", "flatness", str(runs["fgmix"]), "--n-directions", "1"]
    assert main([*argv, "--max-samples", "8", "--directions", "filter"]) == 0
    _png(runs["fgmix"] / "analysis" / "flatness.png")
    assert "filter directions" in capsys.readouterr().out


def test_surface_with_paths(runs, tmp_path, capsys):
    out = tmp_path / "surface"
    weights = [f"init:{runs['fgmix']}", str(runs["fgmix"]), f"{runs['fgmix']}:swa"]
    argv = ["analyze", "surface", *weights, "--path", str(runs["path"]), "--grid", "3"]
    assert main([*argv, "--max-samples", "16", "--n-mix", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| init (FGMix) | 0.000 | 0.000 |" in printed
    assert "train + FGMix mixes loss" in printed and "test accuracy: max" in printed
    _png(out / "surface.png")
    numbers = json.loads((out / "surface.json").read_text())
    assert len(numbers["values"]["test accuracy"]) == 3 and len(numbers["paths"]) == 1


def test_latent_with_mixes(runs, tmp_path, capsys):
    out = tmp_path / "latent"
    argv = ["analyze", "latent", str(runs["fgmix"]), "--per-env", "12", "--n-mix", "10"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "extrapolated fraction" in printed and "test -> nearest train code" in printed
    _png(out / "latent.png")
    numbers = json.loads((out / "latent.json").read_text())
    assert 0.0 <= numbers["extrapolated fraction"] <= 1.0
    assert numbers["test -> nearest train or FGMix code"] > 0


def test_analyze_without_a_model_is_one_line_on_stderr(tmp_path, capsys):
    assert main(["analyze", "latent", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("dgalign: error:") and "has no model.pt" in err and "\n" not in err
    assert main(["analyze", "surface", str(tmp_path), str(tmp_path), str(tmp_path)]) != 0
    assert "has no model.pt" in capsys.readouterr().err
