"""The image branch as ONNX, run by ONNX Runtime: the same outputs, several times faster on a CPU.

The export records a digest of the image branch's weights; a saved model uses its export only while the
digest matches, so a stale export (weights changed since) is never run.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .files import write_atomic, write_text_atomic

if TYPE_CHECKING:
    from .vision import ImageBranch

ONNX_FILE, ONNX_META = "image_branch.onnx", "image_branch.json"


class _Exported(nn.Module):
    """Trunk, trainable stages, pooling and head in one graph: image batch -> (logits, pooled features)."""

    def __init__(self, branch: "ImageBranch"):
        super().__init__()
        self.trunk, self.model = branch.trunk_, branch.model_

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.stages(self.trunk(x).float()).mean(dim=(2, 3))
        return self.model.head(pooled), pooled


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over named tensors, in a fixed order."""
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_digest(branch: "ImageBranch") -> str:
    """sha256 over the image branch's weights."""
    return state_digest(branch.state_dict())


def export_onnx(branch: "ImageBranch", directory: str | Path) -> Path:
    """Write `image_branch.onnx` and its digest file into `directory`; returns the ONNX file's path."""
    d = Path(directory)
    net = _Exported(branch).eval()
    x = torch.zeros(1, 3, branch.image_size, branch.image_size)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        write_atomic(d / ONNX_FILE, lambda tmp: torch.onnx.export(
            net, (x,), tmp, input_names=["image"], output_names=["logits", "features"],
            dynamic_axes={"image": batch, "logits": batch, "features": batch}, opset_version=17, dynamo=False))
    write_text_atomic(d / ONNX_META, json.dumps({"weights_digest": weights_digest(branch), "opset": 17}))
    return d / ONNX_FILE


class OnnxRunner:
    """An ONNX Runtime session standing in for the branch's PyTorch forward pass."""

    def __init__(self, path: str | Path):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.session.run(None, {"image": np.ascontiguousarray(x.numpy(), np.float32)})
        return torch.from_numpy(logits), torch.from_numpy(features)


def attach_onnx(branch: "ImageBranch", directory: str | Path) -> bool:
    """Run `branch` through the export in `directory` if there is one made from these weights; a stale export
    is ignored with a warning."""
    d = Path(directory)
    if not (d / ONNX_FILE).is_file() or not (d / ONNX_META).is_file():
        return False
    meta = json.loads((d / ONNX_META).read_text())
    if meta.get("weights_digest") != weights_digest(branch):
        warnings.warn(f"{d / ONNX_FILE} was exported from other weights than this model's; using PyTorch (run "
                      f"`multipill export {d}` again)")
        return False
    branch.onnx_ = OnnxRunner(d / ONNX_FILE)
    return True
