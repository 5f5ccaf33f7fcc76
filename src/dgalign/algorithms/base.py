"""The algorithm contract (DomainBed's): `Algorithm(input_shape, num_classes, num_domains,
hparams)`, `update(minibatches) -> dict of logged values`, `predict(x) -> logits`.

`minibatches` is a list with one `(x, y)` pair per training domain. `update` returns detached
0-dim tensors (left on the training device: the loop reads them to the host once per
checkpoint) or Python floats. Algorithms whose penalties act on the classifier head expose
`featurizer` and `classifier` modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dgalign.hparams import HParam
from dgalign.networks import build_classifier, build_featurizer

Minibatches = list[tuple[torch.Tensor, torch.Tensor]]
Logs = dict[str, torch.Tensor | float]


class Algorithm(nn.Module):
    """Base class. Subclasses set `HPARAMS` (their own hyper-parameters), `DESCRIPTION` (one
    line) and `PAPER` (reference), and implement `update` and `predict`."""

    HPARAMS: ClassVar[tuple[HParam, ...]] = ()
    DESCRIPTION: ClassVar[str] = ""
    PAPER: ClassVar[str] = ""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.num_domains = num_domains
        self.hparams = dict(hparams)

    @classmethod
    def hparam_space(cls, dataset: str) -> list[HParam]:
        """This algorithm's own hyper-parameters on `dataset` (default: `HPARAMS`)."""
        return list(cls.HPARAMS)

    def update(self, minibatches: Minibatches) -> Logs:
        """One training step on one minibatch per domain; returns the logged values."""
        raise NotImplementedError

    def count_updates(self) -> None:
        """Start the step counter `updates`: a Python int (logic that branches on it reads
        no device value), mirrored in the buffer `update_count` so checkpoints and model
        files keep it; loading a state dict sets `updates` from the buffer."""
        self.register_buffer("update_count", torch.tensor(0, dtype=torch.long))
        self.updates = 0
        self.register_load_state_dict_post_hook(_read_update_count)

    def counted(self) -> None:
        """Count one update: `updates += 1`, written to the buffer without a host sync."""
        self.updates += 1
        self.update_count.fill_(self.updates)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for inputs `x`."""
        raise NotImplementedError

    def prediction_head(self) -> tuple[nn.Module, nn.Linear] | None:
        """`(f, h)` with `predict(x) = h(f(x))` in evaluation mode and `h` linear, for the
        head diagnostics (`dgalign.train.diagnostics`); None when `predict` takes another
        path. Default: the `featurizer` and `classifier` attributes when the classifier is
        an `nn.Linear`; algorithms whose `predict` is not that chain return None."""
        featurizer = getattr(self, "featurizer", None)
        classifier = getattr(self, "classifier", None)
        if isinstance(featurizer, nn.Module) and isinstance(classifier, nn.Linear):
            return featurizer, classifier
        return None

    def extra_state(self) -> dict[str, Any]:
        """Plain state beyond `state_dict()` needed to resume exactly (optimizers, counters).

        The default saves every attribute that is a `torch.optim.Optimizer`."""
        return {
            name: value.state_dict()
            for name, value in vars(self).items()
            if isinstance(value, torch.optim.Optimizer)
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` returned."""
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)


def _read_update_count(module: nn.Module, _incompatible: Any) -> None:
    module.updates = int(module.update_count)


class FeaturizerClassifier(Algorithm):
    """An algorithm with `featurizer` -> `classifier` and one Adam optimizer over both."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: dict[str, Any],
    ) -> None:
        super().__init__(input_shape, num_classes, num_domains, hparams)
        self.featurizer = build_featurizer(input_shape, self.hparams)
        self.classifier = build_classifier(
            self.featurizer.n_outputs, num_classes, bool(self.hparams["nonlinear_classifier"])
        )
        self.network = nn.Sequential(self.featurizer, self.classifier)
        self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the network with `lr` and `weight_decay` (re-created by annealed methods)."""
        return torch.optim.Adam(
            self.network.parameters(),
            lr=self.hparams["lr"],
            weight_decay=self.hparams["weight_decay"],
        )

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def replace_featurizer(self, featurizer: nn.Module) -> None:
        """Use `featurizer` (e.g. the built one wrapped) before the classifier, with a fresh
        optimizer over the new network."""
        self.featurizer = featurizer
        self.network = nn.Sequential(self.featurizer, self.classifier)
        self.optimizer = self.make_optimizer()

    def erm_step(self, minibatches: Minibatches) -> torch.Tensor:
        """One `optimizer` step on the mean CE of all domains' samples; returns the loss."""
        all_x = torch.cat([x for x, _ in minibatches])
        all_y = torch.cat([y for _, y in minibatches])
        loss = F.cross_entropy(self.predict(all_x), all_y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss
