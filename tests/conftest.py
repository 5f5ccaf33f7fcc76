"""Shared fixtures: a fast run configuration on Spurious28; one thread count for every test;
the tests that start a Ray instance kept on one pytest-xdist worker.

Floating-point results depend on the summation order, and BLAS picks its blocking by the number
of threads. So the whole suite, and every process it starts (through OMP_NUM_THREADS /
MKL_NUM_THREADS, inherited), runs with the same two intra-op threads on any machine: a
comparison that passes here passes on a 64-core CI runner too. Tolerances of float comparisons
are set from the dtype and the problem size, never tuned to one machine's rounding.
"""

import os

import pytest
import torch

TEST_THREADS = 2
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = str(TEST_THREADS)
torch.set_num_threads(TEST_THREADS)

# A small MLP makes Spurious28 runs take a fraction of a second per checkpoint.
FAST_HPARAMS = '{"backbone": "mlp", "mlp_width": 32, "batch_size": 16}'


@pytest.fixture(autouse=True)
def _restore_threads():
    """A test may set its own intra-op thread count; the next test starts with TEST_THREADS
    again (a leaked count changes the rounding of a later test's in-process runs against
    their subprocess twins)."""
    yield
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture
def fast_hparams() -> str:
    return FAST_HPARAMS


def pytest_collection_modifyitems(items: list) -> None:
    """Tests that start a local Ray instance (the `ray_local` fixture, or "ray" in the test's
    name) form one xdist group, so that under `--dist loadgroup` they run one after another
    on one worker and never see another test's Ray processes."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()) or "ray" in item.name.split("_"):
            item.add_marker(pytest.mark.xdist_group("ray"))
