"""Trust: calibration, abstention, novelty, Grad-CAM explanations and product cards."""
import json

import numpy as np
import pytest
from PIL import Image

from multipill import PillClassifier
from multipill.backbones import list_backbones
from multipill.calibration import (apply_temperature, certainty, choose_ocr_gate, choose_threshold, expected_calibration_error,
                                   fit_temperature, risk_coverage, to_certainty, to_probability)
from multipill.cards import WARNING, Fact, cards_lexicon, load_cards
from multipill.cli import format_table, main
from multipill.explain import pointing_game
from multipill.novelty import NearestNeighbourNovelty
from multipill.products import SEED_PRODUCTS
from multipill.synthetic import render_pack
from multipill.text import log_softmax
from multipill.vision import ImageBranch

SMALL = dict(image_size=128, views=2, epochs=40, patience=8, progress=False)


@pytest.fixture(scope="module")
def clf(packs):
    return PillClassifier(**SMALL).fit(packs)


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 5))
    p_true = np.exp(log_softmax(logits / 2.5))
    y = np.array([rng.choice(5, p=p) for p in p_true])
    t = fit_temperature(log_softmax(logits), y)
    assert 2.1 < t < 2.9
    before, after = log_softmax(logits), apply_temperature(logits, t)
    ece = [expected_calibration_error(np.exp(lp.max(1)), lp.argmax(1) == y) for lp in (before, after)]
    assert ece[1] < ece[0] / 2


def test_threshold_reaches_target_or_abstains_everything():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, False, True, False])
    assert choose_threshold(conf, correct, 1.0) == 0.9
    assert choose_threshold(conf, correct, 0.8) == 0.7
    assert choose_threshold(conf, np.zeros(6, bool), 0.5) > 0.99  # nothing is safe to answer
    curve = risk_coverage(conf, correct)
    assert curve["coverage"][-1] == 1.0 and curve["risk"][2] == 0.0


def test_weighted_threshold_and_ocr_gate():
    conf = np.array([0.99, 0.95, 0.9, 0.8])
    correct = np.array([True, False, True, True])
    assert choose_threshold(conf, correct, 0.9) == 0.99
    # the one mistake standing for a tenth of the weight of each right answer: 0.9 target met at 0.8
    assert choose_threshold(conf, correct, 0.9, weight=np.array([1, 0.1, 1, 1])) == 0.8
    # skip text from the surest image answer down until a photo whose text would put the answer right
    sure = np.array([9.0, 8.0, 7.0, 6.0, 5.0])
    image_ok = np.array([True, True, False, True, True])
    assert choose_ocr_gate(sure, image_ok, np.ones(5, bool)) == 8.0  # the third needs its text
    assert choose_ocr_gate(sure, image_ok, np.array([True, True, False, True, True])) == 5.0  # text fixes none
    # a photo that text breaks does not buy the skipping of one that text fixes: a subset could lose it
    assert choose_ocr_gate(sure, image_ok, np.array([True, False, True, True, True])) == 8.0
    assert choose_ocr_gate(sure, ~image_ok, np.ones(5, bool)) == np.inf
    assert choose_ocr_gate(np.array([9.0, 9.0, 5.0]), np.array([True, False, True]), np.ones(3, bool)) == np.inf


def test_saturated_answers_still_rank_so_one_confident_mistake_does_not_refuse_all():
    # three answers whose top probability rounds to 1.0; the mistake is the least sure of them
    logits = np.array([[80.0, 0, 0], [60.0, 0, 0], [0, 45.0, 0], [3.0, 0, 0]])
    logp, y = log_softmax(logits), np.array([0, 0, 0, 0])
    assert (np.exp(logp.max(1))[:3] == 1.0).all()
    sure = certainty(logp)
    assert sure[0] > sure[1] > sure[2] > sure[3]
    threshold = choose_threshold(sure, logp.argmax(1) == y, 1.0)
    assert (sure >= threshold).tolist() == [True, True, False, False]
    assert to_probability(to_certainty(0.9)) == pytest.approx(0.9) and to_certainty(1.01) == np.inf


def test_novelty_flags_far_points():
    rng = np.random.default_rng(0)
    known = rng.normal(0, 1, (200, 16)) + 5
    det = NearestNeighbourNovelty(k=3, quantile=0.95).fit(known[:150], known[150:])
    far = rng.normal(0, 1, (20, 16)) - 5
    assert det.is_novel(far).all() and det.is_novel(known[150:]).mean() <= 0.1


def test_seed_cards_have_sources_and_feed_the_lexicon():
    cards = load_cards("seed")
    assert set(cards) == {p.brand for p in SEED_PRODUCTS}
    for card in cards.values():
        for fact in card.facts.values():
            assert fact.value in (None, "", []) or fact.source
    assert "Paracetamol" in cards_lexicon(cards)["Bioflu"]
    with pytest.raises(ValueError, match="no source"):
        Fact("500 mg", None)
    with pytest.raises(ValueError, match="unknown fields"):
        load_cards({"X": {"colour": {"value": "red", "source": "me"}}})


def test_calibrated_answer_and_threshold_from_validation(clf):
    v = clf.validation_
    final = clf._final(v["image"], v["fused_cv"], v["has_text"])
    answered = certainty(final) >= clf.threshold_
    if answered.any():
        assert (final.argmax(1) == v["y"])[answered].mean() >= clf.target_accuracy
    rep = clf.calibration_
    assert rep["answer"]["ece_after"] <= rep["answer"]["ece_before"] + 1e-9
    assert set(rep["temperatures"]) == {"image", "text", "fused"}


def test_blank_image_and_unseen_brand_abstain(clf):
    blank = Image.new("RGB", (256, 256), (255, 255, 255))
    pred = clf.predict(blank)
    assert pred.abstained and any("abstained" in n for n in pred.notes)
    assert pred.warning == WARNING
    unseen = render_pack(next(p for p in SEED_PRODUCTS if p.brand == "Kremil S"), np.random.default_rng(3))[0]
    known = render_pack(next(p for p in SEED_PRODUCTS if p.brand == "Bioflu"), np.random.default_rng(3))[0]
    scores = clf.novelty_.score(clf.image_.predict([blank, unseen, known])[1])
    assert scores[0] > scores[2]


def test_evaluate_reports_calibration_and_abstention(clf, packs):
    r = clf.evaluate(packs, split="test")
    a = r["abstention"]
    assert 0 <= a["coverage"] <= 1 and a["n_answered"] == round(a["coverage"] * r["n"])
    assert len(a["risk_coverage"]["coverage"]) > 0
    assert {"image", "answer"} <= set(r["calibration"])
    assert "ece_before" in r["calibration"]["answer"]


def test_user_threshold_and_recalibration(clf, packs, tmp_path):
    clf.save(tmp_path / "m")
    strict = PillClassifier.load(tmp_path / "m", abstain_threshold=1.01)
    with pytest.warns(UserWarning, match="withhold every answer: abstain_threshold=1.01"):
        strict.calibrate(packs, split="validation")
    assert strict.threshold_ == np.inf
    assert all(p.abstained for p in strict.predict(sorted((packs / "test" / "Bioflu").glob("*.png"))[:3]))
    lax, demanding = (PillClassifier.load(tmp_path / "m", target_accuracy=t).calibrate(packs, split="validation")
                      for t in (0.5, 0.99))
    assert lax.threshold_ <= demanding.threshold_
    assert lax.calibration_["threshold"]["validation_coverage"] > 0
    assert lax.calibration_["threshold"]["withhold_all_reason"] is None


def test_unreachable_target_is_recorded_and_explained(clf, packs, tmp_path):
    clf.save(tmp_path / "m")
    with pytest.warns(UserWarning, match="no confidence threshold reached target_accuracy=1.01"):
        unreachable = PillClassifier.load(tmp_path / "m", target_accuracy=1.01).calibrate(packs, split="validation")
    recorded = unreachable.calibration_["threshold"]
    assert recorded["chosen_by"] == "target_accuracy" and recorded["validation_coverage"] == 0
    reloaded = PillClassifier.load(unreachable.save(tmp_path / "u"))
    table = format_table(reloaded.evaluate(packs, split="test"))
    assert f"every answer withheld: {recorded['withhold_all_reason']}" in table


def test_cards_round_trip_and_show_with_answers(clf, packs, tmp_path):
    clf.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "cards.json").read_text())
    assert set(saved) == set(clf.classes_)
    loaded = PillClassifier.load(tmp_path / "m")
    assert {c: k.to_json() for c, k in loaded.cards_.items()} == {c: k.to_json() for c, k in clf.cards_.items()}
    pred = loaded.predict(sorted((packs / "test" / "Biogesic").glob("*.png"))[0])
    assert pred.card == loaded.cards_[pred.label].to_json()
    assert loaded.threshold_ == clf.threshold_ and loaded.temperatures_ == clf.temperatures_
    assert loaded.novelty_.threshold_ == clf.novelty_.threshold_
    files = sorted((packs / "test").rglob("*.png"))[::7]
    assert [p.abstained for p in loaded.predict(files)] == [p.abstained for p in clf.predict(files)]
    assert np.array_equal(loaded.novelty_.reference_, clf.novelty_.reference_)


def test_explain_heatmap_overlay_and_cli(clf, packs, tmp_path):
    f = sorted((packs / "test" / "Neozep").glob("*.png"))[0]
    ex = clf.explain(f)
    img = Image.open(f)
    assert ex.heatmap.shape == (img.height, img.width)
    assert ex.heatmap.min() >= 0 and ex.heatmap.max() == pytest.approx(1.0)
    assert ex.label in clf.classes_
    assert ex.text_shift == pytest.approx(ex.answer_probability - ex.image_probability)
    other = clf.explain(f, target="Biogesic")
    assert other.label == "Biogesic" and not np.array_equal(other.heatmap, ex.heatmap)
    png = ex.save(tmp_path / "ex.png")
    assert Image.open(png).size[0] > 100
    with pytest.raises(ValueError, match="unknown class"):
        clf.explain(f, target="Aspirin")
    clf.save(tmp_path / "m")
    out = tmp_path / "cli.png"
    assert main(["explain", str(f), "--model", str(tmp_path / "m"), "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("backbone", list_backbones())
def test_gradcam_on_every_backbone(backbone):
    branch = ImageBranch(backbone, pretrained=False, image_size=64, progress=False)
    branch.build(3, pretrained=False)
    img = Image.new("RGB", (90, 70), (200, 30, 30))
    heat, cls = branch.gradcam(img, target=2)
    assert heat.shape == (70, 90) and cls == 2 and 0 <= heat.min() and heat.max() <= 1


def test_pointing_game():
    heat = np.zeros((10, 10))
    heat[2, 3] = 1.0
    heat[8, 8] = 0.5
    mask = np.zeros((10, 10), bool)
    mask[:5, :5] = True
    hit, share = pointing_game(heat, mask)
    assert hit and share == pytest.approx(1 / 1.5)


def test_temperature_is_not_dragged_by_one_confident_mistake():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 100)
    logits = np.full((100, 4), -6.0)
    logits[np.arange(100), y] = 6.0
    logits[0] = [30.0, -30.0, -30.0, -30.0] if y[0] != 0 else [-30.0, 30.0, -30.0, -30.0]  # one sure error
    t = fit_temperature(log_softmax(logits), y)
    after = apply_temperature(logits, t)
    assert np.exp(after.max(1))[1:].mean() > 0.97  # the 99 right answers stay confident (log-loss: 0.95)
