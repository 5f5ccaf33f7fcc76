"""scripts/gpu-check and the `cuda` marker, on any machine: the script parses and refuses to run
without a GPU in one line; the `cuda` tests are deselected by default and collected by
`-m cuda` (the last `-m` wins over the one in pyproject's addopts)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check"
CUDA_TESTS = "tests/gpu/test_cuda.py::"


def test_gpu_check_is_an_executable_bash_script():
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    parsed = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr


def test_gpu_check_fails_fast_without_a_gpu():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("gpu-check: no CUDA GPU: torch.cuda.is_available() is False")
    assert done.stderr.count("\n") == 1


def _collect(*options: str) -> list[str]:
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*command, *options, "tests/gpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_cuda_tests_are_deselected_by_default_and_collected_by_m_cuda():
    default, cuda = _collect(), _collect("-m", "cuda")
    assert not any(line.startswith(CUDA_TESTS) for line in default)
    assert any(line.startswith("tests/gpu/test_gpu_check.py::") for line in default)
    selected = [line for line in cuda if line.startswith("tests/gpu/")]
    assert len(selected) >= 6 and all(line.startswith(CUDA_TESTS) for line in selected)
    assert any("deselected" in line for line in default + cuda)
