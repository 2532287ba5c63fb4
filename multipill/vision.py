"""The image branch: a timm backbone, the seed's head, three freeze modes, cached frozen activations."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .activations import ActivationStore, content_key, default_activation_dir, view_seed
from .backbones import DEFAULT_BACKBONE, backbone_stages, create_backbone, get_spec, normalisation
from .data import LazyImages, prefetch
from .export import state_digest
from .processes import process_state
from .training import TrainConfig, fit_model
from .transforms import eval_transform, train_transform

FREEZE_MODES = ("frozen", "partial", "full")


class SeedHead(nn.Module):
    """Global average pooling, Dense 512 + ReLU, Dropout 0.3, Linear: the seed study's classifier head."""

    def __init__(self, in_features: int, n_classes: int, hidden: int = 512, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.mean(dim=(2, 3)) if x.ndim == 4 else x)


class _Trainable(nn.Module):
    """The part that learns: the unfrozen stages (maybe none) and the head."""

    def __init__(self, stages: Sequence[nn.Module], head: SeedHead):
        super().__init__()
        self.stages = nn.Sequential(*stages)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(x.float()))


class _CachedViews(Dataset):
    """Precomputed frozen-trunk activations, several augmented views per image; one drawn per access."""

    def __init__(self, store: ActivationStore, refs: np.ndarray, labels: torch.Tensor):
        self.store, self.refs, self.labels = store, refs, labels  # refs: images x views x (segment, row)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        v = int(torch.randint(self.refs.shape[1], (1,)))
        return torch.from_numpy(np.array(self.store.row(tuple(self.refs[i, v])))), self.labels[i]


class _Augmented(Dataset):
    """Images augmented on the fly, for full fine-tuning where nothing can be cached."""

    def __init__(self, images: Sequence[Image.Image], labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


class ImageBranch:
    """Backbone + seed head; `fit` learns from PIL images and integer labels, `predict_logits` scores images."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, pretrained: bool | str = True,
                 freeze: str = "frozen", unfreeze_stages: Optional[int] = None, image_size: int = 224,
                 views: int = 4, hflip: bool = True, train: Optional[TrainConfig] = None,
                 batch_size: int = 32, progress: bool = True, activation_cache: str | Path | bool | None = None):
        if freeze not in FREEZE_MODES:
            raise ValueError(f"freeze must be one of {FREEZE_MODES}, not {freeze!r}")
        get_spec(backbone)
        self.backbone, self.pretrained, self.freeze = backbone, pretrained, freeze
        self.unfreeze_stages = unfreeze_stages
        self.image_size, self.views, self.hflip = image_size, views, hflip
        self.train_config = train or TrainConfig()
        self.batch_size, self.progress, self.activation_cache = batch_size, progress, activation_cache

    def config(self) -> dict:
        return {"backbone": self.backbone, "freeze": self.freeze, "unfreeze_stages": self.unfreeze_stages,
                "image_size": self.image_size, "views": self.views, "hflip": self.hflip,
                "train": vars(self.train_config)}

    def _split(self, n_stages: int) -> int:
        """Index of the first trainable stage (the last stage is the head conv/norm)."""
        if self.freeze == "frozen":
            return n_stages
        if self.freeze == "full":
            return 0
        n = self.unfreeze_stages if self.unfreeze_stages is not None else get_spec(self.backbone).partial_stages
        return max(0, n_stages - 1 - n)

    def build(self, n_classes: int, pretrained: bool | str | None = None) -> None:
        """Create the network; weights come from `pretrained` (None: the branch's own setting)."""
        model = create_backbone(self.backbone, self.pretrained if pretrained is None else pretrained)
        self.mean_, self.std_ = normalisation(model)
        stages = backbone_stages(model, self.backbone)
        k = self._split(len(stages))
        self.trunk_ = nn.Sequential(*stages[:k]).eval()
        for p in self.trunk_.parameters():
            p.requires_grad_(False)
        self.model_ = _Trainable(stages[k:], SeedHead(model.num_features, n_classes))
        self.onnx_ = None  # set by export.attach_onnx
        self._stores: dict[bool, ActivationStore] = {}

    def _store(self, augmented: bool) -> ActivationStore:
        """Where this trunk's activations are kept: on disk unless `activation_cache=False`; float16 for the
        augmented training views, float32 for plain ones so answers from the cache equal those from pixels."""
        if augmented not in self._stores:
            with torch.no_grad():
                shape = self._pool(self.trunk_(torch.zeros(1, 3, self.image_size, self.image_size))).shape[1:]
            settings = {"backbone": self.backbone, "trunk": state_digest(self.trunk_.state_dict()),
                        "image_size": self.image_size,
                        "mean": list(self.mean_), "std": list(self.std_)}
            if augmented:
                settings.update(augmentation="seed", hflip=self.hflip, seed=self.train_config.seed)
            cache = self.activation_cache
            directory = None if cache is False else default_activation_dir() if cache in (None, True) else cache
            self._stores[augmented] = ActivationStore(directory, settings, shape,
                                                      "float16" if augmented else "float32")
        return self._stores[augmented]

    def _pool(self, a: torch.Tensor) -> torch.Tensor:
        """Pooled when nothing after the trunk is spatial (the frozen mode), kept as maps otherwise."""
        return a.mean(dim=(2, 3)) if len(self.model_.stages) == 0 else a

    def _activations(self, images: Sequence[Image.Image], view: Optional[int], desc: str) -> np.ndarray:
        """(segment, row) of each image's frozen-trunk activations under `view` (an augmented view's number, or
        None: no augmentation), computing only those the store lacks; several processes split that work."""
        store = self._store(view is not None)
        sources = images.sources if isinstance(images, LazyImages) else images
        keys = [f"{content_key(s)}:{'eval' if view is None else f'aug{view}'}" for s in sources]
        transform = (eval_transform if view is None else
                     lambda *a: train_transform(*a, self.hflip))(self.image_size, self.mean_, self.std_)
        state = process_state()
        todo = [i for i, k in enumerate(keys) if k not in store]
        if store.directory is not None and state.num_processes > 1:
            self._compute(images, keys, todo[state.process_index::state.num_processes], store, transform, view,
                          f"{desc} (process {state.process_index})")
            state.wait_for_everyone()
            store.refresh()
            todo = [i for i, k in enumerate(keys) if k not in store]
        self._compute(images, keys, todo, store, transform, view, desc)
        return np.array(store.find(keys), dtype=np.int64).reshape(len(keys), 2)

    def _compute(self, images: Sequence[Image.Image], keys: list[str], todo: list[int], store: ActivationStore,
                 transform, view: Optional[int], desc: str) -> None:
        """Run the trunk over images[todo] and add them to the store; augmented views draw from per-image seeds."""
        def pixels(batch: list[int]) -> torch.Tensor:
            xs = []
            for j in batch:
                if view is not None:
                    torch.manual_seed(view_seed(keys[j], view, self.train_config.seed))
                xs.append(transform(images[j]))
            return torch.stack(xs)
        batches = [todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        with torch.random.fork_rng(devices=[]):
            for batch, x in zip(batches, tqdm(prefetch(pixels, batches), total=len(batches), desc=desc,
                                              disable=not self.progress, leave=False)):
                with torch.no_grad():
                    a = self._pool(self.trunk_(x))
                store.add([keys[j] for j in batch], a.numpy())

    def fit(self, images: Sequence[Image.Image], labels: np.ndarray, val_images: Sequence[Image.Image],
            val_labels: np.ndarray, n_classes: int, checkpoint_dir: Optional[str] = None) -> "ImageBranch":
        torch.manual_seed(self.train_config.seed)  # head initialisation and cached augmentations
        self.build(n_classes)
        y, vy = torch.as_tensor(labels, dtype=torch.long), torch.as_tensor(val_labels, dtype=torch.long)
        if len(self.trunk_) == 0:
            train_ds: Dataset = _Augmented(images, y, train_transform(self.image_size, self.mean_, self.std_,
                                                                      self.hflip))
            val_ds: Dataset = _Augmented(val_images, vy, eval_transform(self.image_size, self.mean_, self.std_))
        else:
            refs = np.stack([self._activations(images, v, f"caching view {v + 1}/{self.views}")
                             for v in range(self.views)], axis=1)
            train_ds = _CachedViews(self._store(True), refs, y)
            val_refs = self._activations(val_images, None, "caching validation")[:, None]
            val_ds = _CachedViews(self._store(False), val_refs, vy)
        fingerprint = json.dumps(self.config(), sort_keys=True) + f"|{len(images)}|{int(y.sum())}"
        self.history_ = fit_model(self.model_, train_ds, val_ds, self.train_config, checkpoint_dir,
                                  fingerprint, self.progress)
        self.model_.eval()
        self._stores = {k: v for k, v in self._stores.items() if v.directory is not None}  # memory ones: freed
        return self

    def predict(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """Class logits and pooled features (the head's input) for each image, without augmentation. A data set's
        photos (LazyImages) go through the on-disk activation cache; photos handed over one by one are not stored."""
        transform = eval_transform(self.image_size, self.mean_, self.std_)
        self.model_.eval()
        cached = (self.onnx_ is None and isinstance(images, LazyImages) and len(self.trunk_) > 0
                  and self.activation_cache is not False)
        refs = self._activations(images, None, "image branch") if cached else None
        logits, features = [], []
        starts = list(range(0, len(images), self.batch_size))
        batches = [None] * len(starts) if refs is not None else prefetch(  # decoded ahead while the model runs
            lambda i: torch.stack([transform(im) for im in images[i:i + self.batch_size]]), starts)
        for i, x in zip(starts, batches):
            if refs is not None:
                with torch.no_grad():
                    h = self.model_.stages(torch.from_numpy(self._store(False).rows(
                        [tuple(r) for r in refs[i:i + self.batch_size]])))
                    pooled = h.mean(dim=(2, 3)) if h.ndim == 4 else h
                    scores = self.model_.head(pooled)
            elif self.onnx_ is not None:  # the ONNX export of these weights (multipill export)
                scores, pooled = self.onnx_(x)
            else:
                with torch.no_grad():
                    pooled = self.model_.stages(self.trunk_(x).float()).mean(dim=(2, 3))
                    scores = self.model_.head(pooled)
            logits.append(scores)
            features.append(pooled)
        if not logits:
            return np.zeros((0, self.model_.head.net[-1].out_features)), np.zeros((0, 0))
        return torch.cat(logits).numpy(), torch.cat(features).numpy()

    def predict_logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.predict(images)[0]

    def gradcam(self, image: Image.Image, target: Optional[int] = None) -> tuple[np.ndarray, int]:
        """Grad-CAM on the last feature map: an HxW map in [0, 1] at the image's own size, and the class.

        The map weights each channel of the last stage by the mean gradient of the target logit, keeps the
        positive evidence and is stretched back over the image (the model saw it resized to a square).
        """
        x = eval_transform(self.image_size, self.mean_, self.std_)(image)[None]
        self.model_.eval()
        with torch.no_grad():
            fmap = self.model_.stages(self.trunk_(x).float())
        fmap.requires_grad_(True)
        with torch.enable_grad():
            logits = self.model_.head(fmap)
            cls = int(logits.argmax(1)) if target is None else int(target)
            (grad,) = torch.autograd.grad(logits[0, cls], fmap)
        cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * fmap).sum(1, keepdim=True)).detach()
        cam = nn.functional.interpolate(cam, size=(image.height, image.width), mode="bilinear",
                                        align_corners=False)[0, 0].numpy()
        peak = float(cam.max())
        return (cam / peak if peak > 0 else cam).astype(np.float32), cls

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight needed to predict: the frozen trunk and the trained part."""
        state = {f"trunk.{k}": v for k, v in self.trunk_.state_dict().items()}
        state.update({f"model.{k}": v for k, v in self.model_.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor], n_classes: int) -> None:
        self.build(n_classes, pretrained=False)
        self.trunk_.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("trunk.")})
        self.model_.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        self.model_.eval()
