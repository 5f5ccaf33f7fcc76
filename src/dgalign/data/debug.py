"""Debug data made in code: `Spurious28` (ours: learnable, with a spurious feature; called
`Debug28` before DomainBed's own Debug28 got that name here), and DomainBed's `Debug28` and
`Debug224` (noise with random labels)."""

from __future__ import annotations

import torch

from dgalign.data.base import MultipleEnvironmentDataset, TensorEnvironment


class Spurious28(MultipleEnvironmentDataset):
    """Three environments of 64 images (3x28x28, 2 classes), generated from a fixed seed.

    The class shifts the mean of channel 0 (an invariant signal); a spurious signal in
    channel 1 agrees with the label with a probability that differs per environment
    (0.9, 0.8, 0.1), so the data is learnable and has a distribution shift."""

    ENVIRONMENTS = ("0", "1", "2")
    N_STEPS = 101
    CHECKPOINT_FREQ = 20
    input_shape = (3, 28, 28)
    num_classes = 2
    SAMPLES_PER_ENV = 64
    SPURIOUS_AGREEMENT = (0.9, 0.8, 0.1)

    def __init__(self, root: object = None, test_envs: object = None, hparams: object = None):
        super().__init__()
        generator = torch.Generator().manual_seed(28)
        n = self.SAMPLES_PER_ENV
        for agreement in self.SPURIOUS_AGREEMENT:
            y = torch.randint(0, self.num_classes, (n,), generator=generator)
            x = torch.randn(n, *self.input_shape, generator=generator)
            sign = 2.0 * y.float() - 1.0
            agrees = torch.rand(n, generator=generator) < agreement
            spurious = torch.where(agrees, sign, -sign)
            x[:, 0] += 0.5 * sign[:, None, None]
            x[:, 1] += 1.0 * spurious[:, None, None]
            self.datasets.append(TensorEnvironment(x, y))


class DomainBedDebug(MultipleEnvironmentDataset):
    """DomainBed's debug data: three environments of 16 Gaussian-noise inputs with random
    binary labels (nothing to learn; for smoke tests of the pipeline). DomainBed draws them
    from the global RNG; here from a generator with a fixed seed, so every run sees the same
    data."""

    ENVIRONMENTS = ("0", "1", "2")
    N_STEPS = 5001
    CHECKPOINT_FREQ = 100
    num_classes = 2
    SAMPLES_PER_ENV = 16
    SEED = 0

    def __init__(self, root: object = None, test_envs: object = None, hparams: object = None):
        super().__init__()
        generator = torch.Generator().manual_seed(self.SEED)
        for _ in self.ENVIRONMENTS:
            x = torch.randn(self.SAMPLES_PER_ENV, *self.input_shape, generator=generator)
            y = torch.randint(0, self.num_classes, (self.SAMPLES_PER_ENV,), generator=generator)
            self.datasets.append(TensorEnvironment(x, y))


class Debug28(DomainBedDebug):
    """DomainBed's Debug28: 3 x 16 noise images of 3 x 28 x 28, 2 random classes."""

    input_shape = (3, 28, 28)


class Debug224(DomainBedDebug):
    """DomainBed's Debug224: 3 x 16 noise images of 3 x 224 x 224, 2 random classes."""

    input_shape = (3, 224, 224)
