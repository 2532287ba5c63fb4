"""The training loop: Adam, cross-entropy, early stopping, resumable checkpoints, run through accelerate."""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .files import write_atomic, write_text_atomic
from .processes import process_state


@dataclass
class TrainConfig:
    """The seed's optimiser and schedule; every field is saved with the model."""

    epochs: int = 100
    lr: float = 1e-4
    batch_size: int = 32
    patience: int = 10
    seed: int = 0
    schedule: str = "constant"  # or "cosine": decays lr to 0 over `epochs`, so a short budget still converges


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """Learning rate of a (0-based) epoch; a pure function of the epoch so resumed runs follow the same path."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * epoch / max(config.epochs, 1)))
    raise ValueError(f"schedule must be 'constant' or 'cosine', not {config.schedule!r}")


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars["scalars"][f"{idx}.{name}"] = value
    return tensors, scalars


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


class Checkpoint:
    """Last and best weights, optimiser and RNG state in safetensors; counters and history in JSON."""

    def __init__(self, directory: Optional[str | Path], fingerprint: str, write: bool = True):
        self.dir = Path(directory) if directory else None
        self.fingerprint, self.write = fingerprint, write  # every process resumes from it; one writes it

    def save(self, model: nn.Module, best: dict, optimizer, progress: dict, shuffle: torch.Generator) -> None:
        if self.dir is None or not self.write:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best.items()})
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.shuffle"] = shuffle.get_state()  # the loader's order for the epochs still to come
        meta = {"fingerprint": self.fingerprint, "progress": progress, "optimizer": opt_meta}
        # weights first, then the JSON that points at them
        write_atomic(self.dir / "checkpoint.safetensors", lambda tmp: save_file(tensors, tmp))
        write_text_atomic(self.dir / "checkpoint.json", json.dumps(meta))

    def load(self, shuffle: torch.Generator) -> Optional[tuple[dict, dict, dict, dict]]:
        """(model state, best state, optimizer state, progress) when a matching checkpoint exists; the random
        state (global and the loader's `shuffle`) is restored, so a resumed run continues as if never stopped."""
        if self.dir is None or not (self.dir / "checkpoint.json").exists():
            return None
        meta = json.loads((self.dir / "checkpoint.json").read_text())
        if meta.get("fingerprint") != self.fingerprint:
            return None
        tensors = load_file(str(self.dir / "checkpoint.safetensors"))
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.shuffle" in tensors:
            shuffle.set_state(tensors["rng.shuffle"])
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        return model, best, _unflatten_optimizer(tensors, meta["optimizer"]), meta["progress"]


def _evaluate(model: nn.Module, loader: DataLoader, accelerator: Accelerator) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            logits, y = accelerator.gather_for_metrics((logits, y))
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
    return loss_sum / max(count, 1), correct / max(count, 1)


def fit_model(model: nn.Module, train: Dataset, val: Dataset, config: TrainConfig,
              checkpoint_dir: Optional[str | Path] = None, fingerprint: str = "",
              progress: bool = True) -> list[dict]:
    """Train until early stopping; restores the best-validation-loss weights and returns per-epoch history."""
    set_seed(config.seed)
    process_state()  # several processes on CPU: gloo, before the Accelerator settles the device
    accelerator = Accelerator()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(train, batch_size=config.batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(val, batch_size=max(config.batch_size, 64))
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    ckpt = Checkpoint(checkpoint_dir, fingerprint + json.dumps(asdict(config), sort_keys=True),
                      write=accelerator.is_main_process)
    state = {"epoch": 0, "best_loss": math.inf, "bad_epochs": 0, "history": []}
    unwrapped = accelerator.unwrap_model(model)
    best = copy.deepcopy(unwrapped.state_dict())
    resumed = ckpt.load(generator)
    if resumed is not None:
        model_state, best, opt_state, state = resumed
        unwrapped.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
    bar = tqdm(range(state["epoch"], config.epochs), desc="training", disable=not progress,
               initial=state["epoch"], total=config.epochs)
    for epoch in bar:
        if state["bad_epochs"] >= config.patience:
            break
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(config, epoch)
        model.train()
        loss_sum, count, started = 0.0, 0, time.perf_counter()
        for x, y in train_loader:
            loss = nn.functional.cross_entropy(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            loss_sum += loss.item() * len(y)
            count += len(y)
        val_loss, val_acc = _evaluate(model, val_loader, accelerator)
        state["history"].append({"epoch": epoch + 1, "train_loss": loss_sum / max(count, 1),
                                 "val_loss": val_loss, "val_accuracy": val_acc,
                                 "seconds": time.perf_counter() - started})
        if val_loss < state["best_loss"]:
            state["best_loss"], state["bad_epochs"] = val_loss, 0
            best = copy.deepcopy(unwrapped.state_dict())
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        ckpt.save(unwrapped, best, optimizer, state, generator)
        bar.set_postfix(val_loss=f"{val_loss:.3f}", val_acc=f"{val_acc:.3f}")
    unwrapped.load_state_dict(best)
    return state["history"]
