"""The image branch exported to ONNX: same outputs as PyTorch, used on load only while it matches the weights."""
import json

import numpy as np
import pytest
from PIL import Image

from multipill import PillClassifier
from multipill.cli import main
from multipill.export import ONNX_FILE, ONNX_META


@pytest.fixture(scope="module")
def saved(packs, tmp_path_factory):
    d = tmp_path_factory.mktemp("export") / "model"
    PillClassifier(fusion=False, image_size=96, views=1, epochs=5, progress=False).fit(packs).save(d)
    return d


def test_onnx_export_matches_pytorch_and_is_used_on_load(saved, packs):
    photos = sorted((packs / "test" / "Neozep").glob("*.png"))[:6] + [Image.new("RGB", (40, 300), "white")]
    torch_model = PillClassifier.load(saved)
    assert torch_model.image_.onnx_ is None
    reference = torch_model.image_.predict([Image.open(p).convert("RGB") if not isinstance(p, Image.Image) else p
                                            for p in photos])
    assert main(["export", str(saved)]) == 0
    assert (saved / ONNX_FILE).is_file() and not list(saved.glob(".*.tmp"))
    onnx_model = PillClassifier.load(saved)
    assert onnx_model.image_.onnx_ is not None
    images = [Image.open(p).convert("RGB") if not isinstance(p, Image.Image) else p for p in photos]
    logits, features = onnx_model.image_.predict(images)
    assert np.abs(logits - reference[0]).max() < 1e-4 and np.abs(features - reference[1]).max() < 1e-4
    assert [p.label for p in onnx_model.predict(photos)] == [p.label for p in torch_model.predict(photos)]
    assert onnx_model.explain(photos[0]).heatmap.shape[:2] == (images[0].height, images[0].width)  # PyTorch
    assert PillClassifier.load(saved, use_onnx=False).image_.onnx_ is None


def test_stale_export_is_ignored_with_a_warning(saved, tmp_path):
    PillClassifier.load(saved, use_onnx=False).export_onnx(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / ONNX_META).read_text())
    (tmp_path / "m" / ONNX_META).write_text(json.dumps({**meta, "weights_digest": "0" * 64}))
    with pytest.warns(UserWarning, match="exported from other weights"):
        model = PillClassifier.load(tmp_path / "m")
    assert model.image_.onnx_ is None
