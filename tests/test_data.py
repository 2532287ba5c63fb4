import time

import datasets
import numpy as np
import pytest
from PIL import Image

from multipill.data import load_splits, stratified_split
from multipill.hub import OfflineError


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = ["a"] * 10 + ["b"] * 4 + ["c"]
    tr, va = stratified_split(labels, 0.25, seed=0)
    assert set(np.asarray(labels)[va]) == {"a", "b"} and "c" in np.asarray(labels)[tr]
    assert not set(tr) & set(va) and len(tr) + len(va) == len(labels)
    assert np.array_equal(va, stratified_split(labels, 0.25, seed=0)[1])


def test_dataset_with_classlabel_and_custom_columns():
    ds = datasets.Dataset.from_dict({"img": [Image.new("RGB", (4, 4))] * 2, "y": [0, 1]},
                                    features=datasets.Features({"img": datasets.Image(),
                                                                "y": datasets.ClassLabel(names=["A", "B"])}))
    s = load_splits(ds, image_column="img", label_column="y")["train"]
    assert s.labels == ["A", "B"] and isinstance(s.sources[0], dict)
    with pytest.raises(ValueError, match="column 'image'"):
        load_splits(ds)


def test_empty_folder_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match="holds no files"):
        load_splits(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        load_splits(tmp_path / "nope")


def test_hub_name_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(OfflineError, match="local ImageFolder"):
        load_splits("someone/pill-photos")
    assert time.time() - start < 10


def test_imagefolder_splits(packs):
    splits = load_splits(packs)
    assert set(splits) == {"train", "validation", "test"} and len(splits["train"]) == 48
