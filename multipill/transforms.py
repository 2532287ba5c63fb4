"""The seed's augmentations for training, and the plain resize + standardise used everywhere else."""
from __future__ import annotations

from torchvision.transforms import v2 as T
import torch


def eval_transform(size: int, mean, std) -> T.Compose:
    return T.Compose([T.ToImage(), T.Resize((size, size), antialias=True),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])


def train_transform(size: int, mean, std, hflip: bool = True) -> T.Compose:
    """Random flip, random zoom/crop to size, random contrast and brightness, then standardise."""
    steps = [T.ToImage(), T.RandomResizedCrop((size, size), scale=(0.7, 1.0), ratio=(0.85, 1.15),
                                              antialias=True)]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ColorJitter(brightness=0.2, contrast=0.2), T.ToDtype(torch.float32, scale=True),
              T.Normalize(mean, std)]
    return T.Compose(steps)
