import time

import pytest
import torch

from multipill.backbones import backbone_stages, create_backbone, list_backbones
from multipill.hub import OfflineError


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_b0", "resnetv2_50"])
def test_stages_reproduce_forward_features(name):
    model = create_backbone(name, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = x
        for stage in backbone_stages(model, name):
            y = stage(y)
        assert torch.allclose(y, model.forward_features(x), atol=1e-5)


def test_packaged_lite0_weights_load_and_differ_from_random():
    pre = create_backbone("efficientnet_lite0", pretrained=True).state_dict()
    rnd = create_backbone("efficientnet_lite0", pretrained=False).state_dict()
    assert not torch.equal(pre["conv_stem.weight"], rnd["conv_stem.weight"])
    assert pre["bn2.running_var"].mean() != 1.0  # ImageNet statistics, not the init


def test_hub_backbone_offline_fails_fast_with_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(OfflineError, match="efficientnet_lite0"):
        create_backbone("resnetv2_50", pretrained=True)
    assert time.time() - start < 10


def test_weights_from_local_file(tmp_path):
    from safetensors.torch import save_file
    src = create_backbone("efficientnet_b0", pretrained=False)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = create_backbone("efficientnet_b0", pretrained=str(tmp_path))
    assert torch.equal(loaded.state_dict()["conv_stem.weight"], src.state_dict()["conv_stem.weight"])


def test_unknown_backbone():
    with pytest.raises(ValueError, match="resnetv2_50"):
        create_backbone("nope")
    assert "efficientnet_lite0" in list_backbones()
