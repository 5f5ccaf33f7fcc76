"""The device a command asks for: refused early, in one line, when it cannot exist here."""

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
