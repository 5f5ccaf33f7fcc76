"""The example plugin package (examples/plugin_package) run as a user runs it: `dgalign
train` and 4-job sweeps whose jobs come from the plugin, on the local launcher (forked and
fresh), on Ray and as a Slurm array through submitit's local executor; the plugin loaded by
`--plugin` (module or path), `DGALIGN_PLUGINS` and the installed entry point; a broken plugin
stopped in one line before any job starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dgalign

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "plugin_package"
MODULE = "dgalign_example_plugin"
SRC = str(Path(dgalign.__file__).resolve().parents[1])
FAST = '{"backbone": "mlp", "mlp_width": 8, "batch_size": 8}'
SWEEP = [
    "--datasets",
    "TwoBlobs",
    "--algorithms",
    "ShrunkERM",
    "--n-hparams",
    "2",
    "--n-trials",
    "1",
    "--single-test-envs",
    "--steps",
    "2",
    "--checkpoint-freq",
    "2",
    "--hparams",
    FAST,
    "--yes",
]  # fmt: skip  (2 test envs x 2 hparams seeds = 4 jobs)

pytestmark = pytest.mark.slow


def env(tmp_path: Path, pythonpath: list[str] | None = None, **extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "DGALIGN_PLUGINS"}
    out.update(
        PYTHONPATH=os.pathsep.join(pythonpath if pythonpath is not None else [SRC, str(PACKAGE)]),
        OMP_NUM_THREADS="1",
        DGALIGN_DATA=str(tmp_path / "data"),
        RAY_ENABLE_UV_RUN_RUNTIME_ENV="0",
    )
    out.update(extra)
    return out


def dgalign_cmd(args, environ, python=sys.executable, timeout=600):
    return subprocess.run(
        [python, "-m", "dgalign", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=environ.get("CWD"),
    )


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_sweep(root: Path, result) -> list[dict]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Launch finished: 4 completed, 0 failed." in result.stdout, result.stdout
    dirs = run_dirs(root)
    assert len(dirs) == 4 and all((d / "done").exists() for d in dirs)
    runs = [json.loads((d / "run.json").read_text()) for d in dirs]
    assert {r["algorithm"] for r in runs} == {"ShrunkERM"}
    return [r["plugins"][0] for r in runs]


def test_train_with_the_plugin_module_records_it(tmp_path):
    out = tmp_path / "run"
    args = ["--plugin", MODULE, "train", "--dataset", "TwoBlobs", "--algorithm", "ShrunkERM"]
    result = dgalign_cmd(
        [*args, "--output-dir", str(out), "--steps", "2", "--hparams", FAST], env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "run.json").read_text())["plugins"]
    assert record == [
        {
            "plugin": MODULE,
            "source": "--plugin",
            "module": MODULE,
            "file": str(PACKAGE / MODULE / "__init__.py"),
            "distribution": None,
            "version": "0.1.0",
        }
    ]


@pytest.mark.parametrize("method", ["forked", "fresh"])
def test_local_sweep_jobs_load_the_plugin(tmp_path, method):
    root = tmp_path / "sweep"
    if method == "forked":  # the plugin by its folder, on the command line
        plugin, environ = ["--plugin", str(PACKAGE / MODULE)], env(tmp_path, [SRC])
    else:  # the plugin by module name, in DGALIGN_PLUGINS
        plugin, environ = [], env(tmp_path, DGALIGN_PLUGINS=MODULE)
    args = [*plugin, "sweep", "launch", "--output-dir", str(root), *SWEEP]
    result = dgalign_cmd([*args, "--start-method", method, "--workers", "2"], environ)
    records = check_sweep(root, result)
    assert {r["module"] for r in records} == {MODULE}


def test_ray_sweep_jobs_load_the_plugin(tmp_path):
    pytest.importorskip("ray")
    root = tmp_path / "sweep"
    args = ["--plugin", str(PACKAGE / MODULE), "sweep", "launch", "--output-dir", str(root)]
    result = dgalign_cmd(
        [*args, *SWEEP, "--launcher", "ray", "--workers", "2"], env(tmp_path, [SRC])
    )
    records = check_sweep(root, result)
    assert {r["file"] for r in records} == {str(PACKAGE / MODULE / "__init__.py")}


def test_slurm_array_jobs_load_the_plugin(tmp_path):
    pytest.importorskip("submitit")
    root = tmp_path / "sweep"
    args = ["--plugin", MODULE, "sweep", "launch", "--output-dir", str(root), *SWEEP]
    slurm = ["--launcher", "slurm", "--submitit-cluster", "local", "--gpus-per-job", "0"]
    slurm += ["--time", "0:10:00", "--array-parallelism", "2", "--wait"]
    records = check_sweep(root, dgalign_cmd([*args, *slurm], env(tmp_path)))
    assert {r["module"] for r in records} == {MODULE}


BROKEN = {
    "missing.py": ("import no_such_module_here\n", "failed to import (ModuleNotFoundError"),
    "nocontract.py": (
        "import torch\nfrom dgalign.algorithms import register\n\n\n@register\n"
        "class Half(torch.nn.Module):\n    def update(self, minibatches):\n        return {}\n",
        "cannot register algorithm 'Half' (nocontract.Half): lacks predict, hparam_space",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_before_any_job(tmp_path, name):
    code, message = BROKEN[name]
    path = tmp_path / name
    path.write_text(code)
    root = tmp_path / "sweep"
    for command in (
        ["train", "--dataset", "TwoBlobs", "--algorithm", "ShrunkERM", "--output-dir", str(root)],
        ["sweep", "launch", "--output-dir", str(root), *SWEEP],
    ):
        result = dgalign_cmd(["--plugin", MODULE, "--plugin", str(path), *command], env(tmp_path))
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"dgalign: error: plugin '{path}' (--plugin)")
        assert message in lines[0]
        assert not root.exists()


def test_installed_entry_point_needs_no_flag(tmp_path):
    """A fresh venv that sees this environment's packages (a .pth file naming its
    site-packages: `--system-site-packages` would name the base interpreter's instead)."""
    import site
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parents = {*site.getsitepackages(), sysconfig.get_paths()["purelib"]}
    (Path(purelib) / "parent_env.pth").write_text("".join(f"{p}\n" for p in sorted(parents)))
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*install, "--no-index", "-e", str(PACKAGE)],
        check=True,
        capture_output=True,
        env=env(tmp_path, [SRC]),
        cwd=tmp_path,
    )
    environ = env(tmp_path, [SRC])
    listed = dgalign_cmd(["algorithms"], environ, python)
    assert listed.returncode == 0 and "ShrunkERM" in listed.stdout, listed.stderr
    root = tmp_path / "sweep"
    result = dgalign_cmd(["sweep", "launch", "--output-dir", str(root), *SWEEP], environ, python)
    records = check_sweep(root, result)
    assert {(r["source"], r["distribution"], r["version"]) for r in records} == {
        ("entry point", "dgalign-example-plugin", "0.1.0")
    }
