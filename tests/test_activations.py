"""The on-disk activation cache: rows survive reopening and torn writes, and a second run computes nothing."""
from __future__ import annotations

import numpy as np
import pytest

from multipill.activations import ActivationStore
from multipill.data import LazyImages, load_splits
from multipill.images import load_image
from multipill.vision import ImageBranch


def test_store_reopens_and_ignores_a_torn_write(tmp_path):
    rows = np.arange(3 * 4, dtype=np.float16).reshape(3, 4)
    store = ActivationStore(tmp_path, {"trunk": "a"}, (4,))
    store.add(["k0", "k1", "k2"], rows)
    (stem,) = [p.with_suffix("") for p in store.directory.glob("*.keys")]
    with open(f"{stem}.rows", "ab") as f:  # a crash half-way through the next row and its key line
        f.write(b"\x01\x02\x03")
    with open(f"{stem}.keys", "a") as f:
        f.write("k3")
    again = ActivationStore(tmp_path, {"trunk": "a"}, (4,))
    assert len(again) == 3 and "k3" not in again
    np.testing.assert_array_equal(again.rows(again.find(["k2", "k0"])), rows[[2, 0]])
    again.add(["k3"], np.full((1, 4), 7))  # a new writer appends after the old rows, in its own segment
    third = ActivationStore(tmp_path, {"trunk": "a"}, (4,))
    np.testing.assert_array_equal(third.rows(third.find(["k3", "k1"])), [[7] * 4, rows[1]])
    assert len(ActivationStore(tmp_path, {"trunk": "b"}, (4,))) == 0  # other settings, other folder


def test_a_failed_write_is_cut_before_the_next_one(tmp_path):
    store = ActivationStore(tmp_path, {}, (2,), "float32")
    store.add(["a"], np.ones((1, 2)))
    (rows_file,) = store.directory.glob("*.rows")
    with open(rows_file, "ab") as f:  # a write that failed after one whole row and part of the next, keys unwritten
        f.write(np.full(2, 9.0, np.float32).tobytes() + b"\x00" * 5)
    with open(rows_file.with_suffix(".keys"), "a") as f:
        f.write("orph")
    store.add(["b"], np.full((1, 2), 2.0))
    reopened = ActivationStore(tmp_path, {}, (2,), "float32")
    assert len(reopened) == 2 and "orph" not in reopened
    np.testing.assert_array_equal(reopened.rows(reopened.find(["a", "b"])), [[1, 1], [2, 2]])


def test_memory_store_needs_no_folder():
    store = ActivationStore(None, {}, (2,))
    store.add(["a", "b"], np.array([[1, 2], [3, 4]]))
    assert store.directory is None
    np.testing.assert_array_equal(store.rows(store.find(["b"])), [[3, 4]])


def _branch(cache) -> ImageBranch:
    from multipill.training import TrainConfig
    return ImageBranch(image_size=64, views=2, train=TrainConfig(epochs=3, patience=3), progress=False,
                       activation_cache=cache)


def test_second_fit_reads_every_activation_from_disk(packs, tmp_path, monkeypatch):
    train = load_splits(packs)["train"]
    images = LazyImages(train.sources)
    classes = sorted(set(train.labels))
    y = np.array([classes.index(c) for c in train.labels])
    computed: list[int] = []
    original = ImageBranch._compute

    def counting(self, images, keys, todo, *args):
        computed.append(len(todo))
        return original(self, images, keys, todo, *args)
    monkeypatch.setattr(ImageBranch, "_compute", counting)
    first = _branch(tmp_path).fit(images[:30], y[:30], images[30:], y[30:], len(classes))
    assert sum(computed) == 2 * 30 + (len(y) - 30)  # two augmented views of 30, one plain view of the rest
    computed.clear()
    second = _branch(tmp_path).fit(images[:30], y[:30], images[30:], y[30:], len(classes))
    assert sum(computed) == 0
    assert [h["val_loss"] for h in second.history_] == [h["val_loss"] for h in first.history_]
    logits, features = second.predict(images[30:])  # read from the cache: equal to the answers from pixels
    assert sum(computed) == 0
    pixels = [load_image(s) for s in images.sources[30:]]
    np.testing.assert_allclose(second.predict(pixels)[0], logits, atol=1e-4)
    assert features.shape == (len(y) - 30, second.model_.head.net[0].in_features)


def test_interrupted_caching_keeps_what_it_wrote(packs, tmp_path, monkeypatch):
    images = LazyImages(load_splits(packs)["train"].sources[:40])
    branch = _branch(tmp_path)
    branch.build(4)
    calls = {"n": 0}
    original = branch.trunk_.forward

    def dies_on_second_batch(x):
        calls["n"] += 1
        if calls["n"] == 3:  # the first call measures the row shape; the third is the second batch
            raise KeyboardInterrupt
        return original(x)
    monkeypatch.setattr(branch.trunk_, "forward", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        branch._activations(images, 0, "view 1")
    fresh = _branch(tmp_path)
    fresh.build(4)
    assert len(fresh._store(True)) == fresh.batch_size  # the first batch survived
    refs = fresh._activations(images, 0, "view 1")
    assert len(fresh._store(True)) == 40 and len({tuple(r) for r in refs}) == 40


def test_without_the_disk_cache_nothing_is_kept_after_fit(packs):
    train = load_splits(packs)["train"]
    images = LazyImages(train.sources)
    classes = sorted(set(train.labels))
    y = np.array([classes.index(c) for c in train.labels])
    branch = _branch(False).fit(images[:30], y[:30], images[30:], y[30:], len(classes))
    assert branch._stores == {}  # the views held in memory for training are freed
    pixels = [load_image(s) for s in images.sources[30:]]
    np.testing.assert_allclose(branch.predict(images[30:])[0], branch.predict(pixels)[0], atol=1e-4)
    assert branch._stores == {}  # and predicting a data set keeps nothing either
