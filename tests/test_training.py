import copy
import json

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from multipill.training import TrainConfig, fit_model


class Crashing(Dataset):
    """Raises once `limit` items have been read: a stand-in for a killed training run."""

    def __init__(self, base, limit):
        self.base, self.limit, self.reads = base, limit, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.limit:
            raise KeyboardInterrupt
        return self.base[i]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y), TensorDataset(x[:16], y[:16])


def test_early_stopping_restores_best_weights():
    train, val = _data()
    model = torch.nn.Linear(8, 2)
    hist = fit_model(model, train, val, TrainConfig(epochs=200, lr=0.5, patience=3), progress=False)
    assert len(hist) < 200
    best = min(h["val_loss"] for h in hist)
    with torch.no_grad():
        x, y = val.tensors
        assert torch.nn.functional.cross_entropy(model(x), y).item() == pytest.approx(best, rel=1e-5)


def test_interrupted_training_resumes_from_checkpoint(tmp_path):
    train, val = _data()
    cfg = TrainConfig(epochs=6, lr=0.05, batch_size=16, patience=100)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))  # dropout draws random numbers
    start = copy.deepcopy(model.state_dict())
    with pytest.raises(KeyboardInterrupt):
        fit_model(model, Crashing(train, limit=64 * 3 + 10), val, cfg, tmp_path, "fp", progress=False)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["progress"]["epoch"] == 3
    resumed = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    hist = fit_model(resumed, train, val, cfg, tmp_path, "fp", progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert hist[:3] == saved["progress"]["history"]  # the first three epochs were not redone
    # and it ends where an uninterrupted run ends: same weights, same losses
    whole = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    whole.load_state_dict(start)
    full = fit_model(whole, train, val, cfg, None, "fp", progress=False)
    assert [h["val_loss"] for h in full] == [h["val_loss"] for h in hist]
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    other = fit_model(torch.nn.Linear(8, 2), train, val, cfg, tmp_path, "other-data", progress=False)
    assert len(other) == 6  # a checkpoint made with other settings is not reused: all six epochs ran
    assert json.loads((tmp_path / "checkpoint.json").read_text())["fingerprint"].startswith("other-data")
