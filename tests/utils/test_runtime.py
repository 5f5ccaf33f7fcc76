"""The runtime: devices refused early, in one line, when they cannot exist here; step timing;
the allocator setting that keeps freed host memory."""

import os
import platform
import subprocess
import sys
import time

import pytest
import torch

from dgalign.errors import ConfigError
from dgalign.utils.runtime import StepTimer, resolve_device


def test_cuda_index_beyond_the_gpu_count_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"has 2 CUDA GPU\(s\), cuda:0 to cuda:1") as info:
        resolve_device("cuda:2")
    assert "\n" not in str(info.value)


def test_cpu_and_unknown_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("gpu0")


def test_precision_switches_set_and_restore_the_matmul_flags():
    from dgalign.utils.runtime import autocast, configure_precision

    try:
        configure_precision("tf32")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
        configure_precision("bf16")
        assert not torch.backends.cuda.matmul.allow_tf32
        with autocast(torch.device("cpu"), "bf16"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
        with autocast(torch.device("cpu"), "fp32"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        with pytest.raises(ConfigError, match="--precision must be one of fp32, tf32, bf16"):
            configure_precision("fp16")
    finally:
        configure_precision("fp32")
    assert torch.get_float32_matmul_precision() == "highest"
    assert not torch.are_deterministic_algorithms_enabled()


def test_clock_synchronises_cuda_devices_only(monkeypatch):
    from dgalign.utils import runtime

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    before = runtime.clock("cpu")
    runtime.synchronize(torch.device("cpu"))
    assert calls == []
    after = runtime.clock(torch.device("cuda:0"))
    runtime.synchronize("cuda")
    assert calls == [torch.device("cuda:0"), torch.device("cuda")]
    assert after >= before


def test_step_timer_on_the_cpu_times_each_step():
    timer = StepTimer("cpu")
    for pause in (0.0, 0.02):
        timer.start()
        time.sleep(pause)
        timer.stop()
    first, second = timer.times()
    assert 0 <= first < second and second >= 0.02
    assert timer.times() == [first, second]  # read once, kept


_FAULTS_SCRIPT = """
import resource, sys, torch
from dgalign.utils.runtime import keep_freed_memory

N = 25_000_000  # 100 MB of float32: above glibc's largest mmap threshold (32 MiB)


def faults_of_fills(times):
    for _ in range(times):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        x = torch.empty(N); x.fill_(1.0); del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


default = faults_of_fills(3)
kept = keep_freed_memory()
# the heap grows for the first few (64-byte aligned blocks do not fit the freed ones exactly)
print(default, int(kept), faults_of_fills(12))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)
@pytest.mark.parametrize("env", ["1", "0"])
def test_keep_freed_memory_reuses_large_blocks_without_page_faults(env):
    """A 100 MB tensor allocated again after a free faults in all its ~24,000 pages by default;
    once freed memory is kept, allocations reuse the heap's pages after a few rounds (the
    12th: almost no faults).
    DGALIGN_KEEP_FREED_MEMORY=0 leaves the default. Mutation caught: dropping the M_MMAP_MAX
    call (the 100 MB block is mmapped and unmapped again: the kept run faults as the default)."""
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT],
        env={**os.environ, "DGALIGN_KEEP_FREED_MEMORY": env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    default, kept, faults = (int(v) for v in out)
    pages = 100_000_000 // 4096
    assert default > pages // 2
    if env == "1":
        assert kept == 1 and faults < pages // 20
    else:
        assert kept == 0 and faults > pages // 2
