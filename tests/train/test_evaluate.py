"""`Evaluator`: the accuracies `accuracy` gives, for in-memory and file-backed splits, with the
file splits served by one loader kept across checkpoints."""

import pytest
import torch
from torch.utils.data import Dataset

from dgalign.data.base import TensorEnvironment
from dgalign.data.splits import Subset
from dgalign.train.evaluate import Evaluator, accuracy


class _Files(Dataset):
    """A dataset read item by item (no `x`/`y` tensors): the loader path of image folders."""

    def __init__(self, x, y):
        self.items = list(zip(x, y.tolist(), strict=True))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 3)

    def predict(self, x):
        return self.lin(x)


@pytest.mark.parametrize("workers", [0, 2])
def test_accuracies_match_accuracy_and_the_loader_is_kept(workers):
    torch.manual_seed(1)
    x, y = torch.randn(300, 4), torch.randint(0, 3, (300,))
    splits = {
        "mem_a": Subset(TensorEnvironment(x, y), list(range(0, 130))),
        "mem_b": Subset(TensorEnvironment(x, y), list(range(130, 300))),
        "file_a": Subset(_Files(x, y), list(range(0, 700 // 7))),
        "file_b": Subset(_Files(x, y), list(range(100, 300))),
        "empty": Subset(TensorEnvironment(x, y), []),
    }
    model = _Linear()
    evaluator = Evaluator(splits, torch.device("cpu"), batch_size=64, num_workers=workers)
    first = evaluator.accuracies(model)
    expected = {n: accuracy(model, s, torch.device("cpu"), 64, 0) for n, s in splits.items()}
    assert list(first) == list(splits)
    assert {k: v for k, v in first.items() if k != "empty"} == {
        k: v for k, v in expected.items() if k != "empty"
    }
    assert first["empty"] != first["empty"]  # nan
    loader = evaluator._loader
    with torch.no_grad():
        model.lin.weight.neg_()  # a later checkpoint: other weights, the same loader
    second = evaluator.accuracies(model)
    assert evaluator._loader is loader
    assert second["file_b"] == accuracy(model, splits["file_b"], torch.device("cpu"), 64, 0)
