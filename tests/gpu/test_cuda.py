"""Checks that need a CUDA GPU (marker `cuda`, deselected by default; `python -m pytest -m cuda`
or scripts/gpu-check runs them): updates on CUDA equal the CPU's in float64, a run SIGKILLed
on CUDA resumes exactly under --deterministic, `clock` and `StepTimer` time the queued
kernels, and in-memory batches on CUDA equal the CPU's."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dgalign import algorithms
from dgalign.algorithms.spaces import default_hparams
from dgalign.utils.runtime import StepTimer, clock, synchronize

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = torch.device("cuda")
SHAPES = {"mlp": (4,), "mnist_cnn": (2, 28, 28)}


def _algorithm(name: str, backbone: str, device: torch.device):
    """`name` with a small `backbone`, float64, seeded, on `device`; the penalties from step 0."""
    hparams = default_hparams(name, "ColoredMNIST") | {"backbone": backbone, "mlp_width": 16}
    hparams.update(mlp_dropout=0.0, batch_size=8)
    if "penalty_anneal_iters" in hparams:
        hparams["penalty_anneal_iters"] = 0
    torch.manual_seed(0)
    return algorithms.get(name)(SHAPES[backbone], 2, 2, hparams).double().to(device)


def _batches(shape, device, n=8, domains=2):
    g = torch.Generator().manual_seed(1)
    out = []
    for e in range(domains):
        x = torch.randn(n, *shape, generator=g, dtype=torch.float64) + 0.5 * e
        y = torch.randint(0, 2, (n,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


@pytest.mark.parametrize("backbone", sorted(SHAPES))
@pytest.mark.parametrize("name", ["ERM", "HessianDiag"])
def test_updates_on_cuda_equal_the_cpu_in_float64(name, backbone):
    """Three updates on CUDA and on the CPU from the same weights and batches: the logged
    values and the weights agree to 1e-6."""
    cpu, gpu = _algorithm(name, backbone, torch.device("cpu")), _algorithm(name, backbone, CUDA)
    batches_cpu, batches_gpu = _batches(SHAPES[backbone], "cpu"), _batches(SHAPES[backbone], CUDA)
    for _ in range(3):
        logged_cpu, logged_gpu = cpu.update(batches_cpu), gpu.update(batches_gpu)
        assert logged_cpu.keys() == logged_gpu.keys()
        for key, value in logged_cpu.items():
            assert float(logged_gpu[key]) == pytest.approx(float(value), rel=1e-6, abs=1e-6), key
    for (key, a), b in zip(cpu.state_dict().items(), gpu.state_dict().values(), strict=True):
        assert b.device.type == "cuda", key
        torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=1e-6, msg=key)
    x = _batches(SHAPES[backbone], "cpu")[0][0]
    torch.testing.assert_close(gpu.predict(x.to(CUDA)).cpu(), cpu.predict(x), rtol=1e-6, atol=1e-6)


def _train(out_dir: Path, *extra: str) -> list[str]:
    hparams = '{"backbone": "mlp", "mlp_width": 32, "batch_size": 16}'
    return [
        *(sys.executable, "-m", "dgalign", "train", "--dataset", "Spurious28"),
        *("--algorithm", "ERM", "--test-envs", "2", "--output-dir", str(out_dir)),
        *("--hparams", hparams, "--device", "cuda", "--deterministic", "--no-progress"),
        *("--steps", "2000", "--checkpoint-freq", "100", *extra),
    ]


def _records(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key in ("step_time", "mem_gb"):
            record.pop(key)
        record["args"].pop("output_dir")
        out.append(record)
    return out


def test_sigkilled_cuda_run_resumes_exactly_under_deterministic(tmp_path):
    """A run on CUDA SIGKILLed part-way and rerun records exactly what an uninterrupted one
    does (under --deterministic; without it some CUDA kernels are not bitwise reproducible)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    done = subprocess.run(_train(full), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen(_train(killed), env=env, stdout=subprocess.DEVNULL)
    results = killed / "results.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 4:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "done").exists(), "the run finished before it could be killed"
    assert 4 <= len(results.read_text().splitlines()) < 21
    rerun = subprocess.run(_train(killed), env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming" in rerun.stdout and (killed / "done").exists()
    records = _records(killed)
    assert records == _records(full)
    assert records[-1]["args"]["deterministic"] is True


def test_clock_waits_for_the_queued_kernels():
    """`clock` synchronizes: the wall time between two readings covers the GPU time of the
    kernels queued between them (CUDA events measure it), however fast they were launched."""
    a = torch.randn(4096, 4096, device=CUDA)
    synchronize(CUDA)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0 = clock(CUDA)
    start.record()
    for _ in range(20):
        a = torch.tanh(a @ a)
    end.record()
    t1 = clock(CUDA)
    assert torch.cuda.current_stream().query()  # nothing left in the queue
    assert (t1 - t0) * 1000.0 >= start.elapsed_time(end) * 0.999
    synchronize("cpu")  # a no-op on the CPU


def test_step_timer_events_cover_the_gpu_work():
    """`StepTimer` on CUDA: one event pair per step, read once; a step of queued matmuls
    takes as long by its events as by a synchronised clock."""
    a = torch.randn(4096, 4096, device=CUDA)
    timer = StepTimer(CUDA)
    start = clock(CUDA)
    for _ in range(3):
        timer.start()
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        timer.stop()
    wall = clock(CUDA) - start
    times = timer.times()
    assert len(times) == 3 and all(t > 0 for t in times)
    assert 0.5 * wall < sum(times) <= 1.05 * wall


def test_in_memory_batches_on_cuda_equal_the_cpu_batches():
    """The split's rows live on the GPU and each batch's indices follow: the same batches as
    on the CPU, for every step."""
    from dgalign.data.base import TensorEnvironment
    from dgalign.data.splits import InfiniteLoader, Subset

    g = torch.Generator().manual_seed(0)
    env = TensorEnvironment(torch.randn(100, 3, generator=g), torch.randint(0, 2, (100,)))
    split = Subset(env, list(range(10, 90)))
    cpu, gpu = (InfiniteLoader(split, 16, 0, 1, d) for d in ("cpu", CUDA))
    for step in (0, 1, 7):
        (xc, yc), (xg, yg) = cpu.batch(step), gpu.batch(step)
        assert xg.device.type == "cuda" and torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)
