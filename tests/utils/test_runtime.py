"""The device a command asks for: refused early, in one line, when it cannot exist here."""

import pytest
import torch

from dgalign.errors import ConfigError
from dgalign.utils.runtime import resolve_device


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
