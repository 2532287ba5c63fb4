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


def test_decode_checks_every_file_but_keeps_no_pixels(tmp_path):
    from multipill.data import LazyImages, Samples, decode, take
    good = []
    for i in range(3):
        path = tmp_path / f"{i}.jpg"
        Image.new("RGB", (640, 480), (i * 80, 0, 0)).save(path, quality=90)
        good.append(path)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good[0].read_bytes()[:2000])
    images, labels, bad = decode(Samples([good[0], truncated, good[1], good[2]], ["a", "b", "a", "c"]))
    assert isinstance(images, LazyImages) and images.sources == good and labels == ["a", "a", "c"]
    assert len(bad) == 1 and "cut.jpg" in bad[0]
    assert images[2].size == (640, 480) and images[2].getpixel((5, 5))[0] > 150  # decoded at full size on use
    assert [im.getpixel((5, 5))[0] < 40 for im in take(images, [0])] == [True]
    assert len(images[1:]) == 2 and len(images + [Image.new("RGB", (8, 8))]) == 4
