"""The enrolment head: enrolled classes scored against the trained ones' fused answer, fitted by pretending."""
import json

import numpy as np

from multipill.enrol import EnrolmentHead, as_enrolled, covering_sets, enrolled_features, unclaimed
from multipill.text import log_softmax

TRAINED, ENROLLED = 8, 2


def _photos(n, labels, seed, card_signal=3.0):
    """Fused answers over the trained classes, picture similarity and card-text match for every class (cards
    with a weaker `card_signal` are like cards holding a name alone)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(labels, n)
    onehot = np.eye(TRAINED + ENROLLED)[y]
    answer = log_softmax(rng.normal(0, 1, (n, TRAINED)) + 2.5 * onehot[:, :TRAINED])
    sim = rng.normal(0, 1, (n, TRAINED + ENROLLED)) + 2.0 * onehot
    cards = rng.normal(0, 1, (n, TRAINED + ENROLLED)) + card_signal * onehot
    return y, answer, sim, cards


def _features(sim, cards, answer, pictured=True):
    return enrolled_features(sim[:, TRAINED:], cards, range(TRAINED, TRAINED + ENROLLED), pictured,
                             unclaimed(answer))


def _fit(misleading=0.0, pictured=True, card_signal=3.0, cut_signal=None):
    """A head fitted on trained classes' photos; `cut_signal`: pretend with cards of that strength."""
    y, answer, sim, cards = _photos(400, np.arange(TRAINED), 0, card_signal)
    cards[:, TRAINED:] += misleading  # the enrolled cards match every held-out photo
    cut = None if cut_signal is None else _photos(400, np.arange(TRAINED), 0, cut_signal)[3][:, :TRAINED]
    pretend, has = list(range(TRAINED)), np.full(ENROLLED, pictured)
    return EnrolmentHead(max_cost=0.02).fit(answer, y, sim[:, :TRAINED], pretend, cards[:, :TRAINED],
                                            _features(sim, cards, answer, has), has, cut)


def _enrolled_accuracy(head, pictured=True, card_signal=3.0):
    """Top-1 on fresh photos of the enrolled classes, scored with or without their pictures."""
    y, answer, sim, cards = _photos(400, np.arange(TRAINED, TRAINED + ENROLLED), 1, card_signal)
    return (np.hstack([answer, head.logits(_features(sim, cards, answer, pictured))]).argmax(1) == y).mean()


def test_head_answers_enrolled_photos_without_costing_the_trained_ones():
    head = _fit()
    assert head.weights_[0] > 0 and head.weights_[1] > 0, head.report_  # pictures and card text count
    assert head.weights_[5] > 0, head.report_  # an unsure trained answer leaves room for a new product
    y, answer, sim, cards = _photos(400, np.arange(TRAINED + ENROLLED), 1)
    scores = head.logits(_features(sim, cards, answer))
    pred = np.hstack([answer, scores]).argmax(1)
    new = y >= TRAINED
    assert (pred[new] == y[new]).mean() >= 0.7  # never seen in training: chance is 0
    assert (pred[~new] == y[~new]).mean() >= (answer[~new].argmax(1) == y[~new]).mean() - 0.05
    report = head.report_
    assert report["held_out_accuracy_after"] >= report["held_out_accuracy_before"] - 0.02
    assert report["pretend_size"] == ENROLLED and report["pretend_sets"] == head.sets


def test_head_lowers_its_constant_when_enrolled_cards_would_take_trained_photos():
    fair, biased = _fit(), _fit(misleading=6.0)
    report = biased.report_
    assert report["constant_lowered_by"] > 0 and fair.report_["constant_lowered_by"] == 0
    assert report["held_out_accuracy_after"] >= report["held_out_accuracy_before"] - 0.02


def test_head_round_trips_through_json():
    head = _fit()
    again = EnrolmentHead.from_json(json.loads(json.dumps(head.to_json())))
    _, answer, sim, cards = _photos(50, np.arange(TRAINED + ENROLLED), 2)
    features = _features(sim, cards, answer)
    assert np.array_equal(again.logits(features), head.logits(features))
    assert again.report_ == head.report_ and again.max_cost == head.max_cost


def test_products_enrolled_without_pictures_get_a_head_fitted_without_them():
    """A card with nothing but a name: pretended classes go without pictures too, so the head does not wait for
    a picture's evidence that never comes."""
    blind = _fit(pictured=False)
    assert blind.weights_[0] == 0 and blind.report_["pictured_share"] == 0.0
    assert _enrolled_accuracy(blind, pictured=False) > _enrolled_accuracy(_fit(), pictured=False) + 0.05
    assert _enrolled_accuracy(_fit()) > _enrolled_accuracy(blind, pictured=False)  # pictures still help


def test_pretending_with_cards_cut_like_the_enrolled_ones_fits_weak_cards_better():
    """Enrolled cards holding a name alone match their photos less than the trained products' full cards do:
    pretended classes scored by their cards cut to that kind give a head that weighs such cards as they are."""
    weak = dict(card_signal=1.0)
    mirrored = _fit(card_signal=3.0, cut_signal=1.0)
    assert _enrolled_accuracy(mirrored, **weak) > _enrolled_accuracy(_fit(card_signal=3.0), **weak) + 0.03


def test_pretend_enrolments_cover_every_class_equally_and_mix_siblings():
    sets = covering_sets(np.arange(21), 10, 5, np.random.default_rng(0))
    counts = np.bincount(np.concatenate(sets), minlength=21)
    assert (counts == 5).all() and max(len(s) for s in sets) <= 10
    assert max(len(s) for s in sets) > 1  # products are enrolled beside others, not one at a time
    assert len({tuple(s) for s in sets}) > 3  # and beside different others in each repeat


def test_as_enrolled_renormalises_the_trained_and_places_each_enrolled_score():
    logp = log_softmax(np.array([[2.0, 1.0, 0.0, -1.0]]))
    out = as_enrolled(logp, [1, 3], np.array([[0.5, 3.0]]))
    assert np.isclose(np.exp(out).sum(), 1)
    assert out[0].argmax() == 3  # the enrolled score decides where it is highest
    assert np.isclose(out[0, 0] - out[0, 2], logp[0, 0] - logp[0, 2])  # the trained keep their ratios
    assert np.isclose(out[0, 3] - out[0, 1], 2.5)
