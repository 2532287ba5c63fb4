import numpy as np

from multipill.text import CharNgramEncoder, Lexicon, TextBranch, TransformerEncoder, fold


def _cos(a, b):
    return float(a.multiply(b).sum())


def test_fold_maps_ocr_confusions():
    assert fold("50Omg") == fold("500mg") and fold("HCI") == fold("HCl") and fold("NE0ZEP") == fold("NEOZEP")


def test_encoder_tolerates_ocr_noise():
    enc = CharNgramEncoder()
    clean, noisy, other = enc.transform(["NEOZEP Phenylephrine HCl 500mg", "NEOZER Phenylephrlne HCI 50Omg",
                                         "BIOFLU Paracetamol"])
    assert _cos(clean, noisy) > 0.6 > _cos(clean, other)


def test_text_branch_learns_and_handles_missing_text():
    texts = ["NEOZEP tablet", "neozep 10mg", "BIOFLU tablet", "bioflu 500mg", "", "DECOLGEN", "decolgen 25mg"]
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    branch = TextBranch().fit(texts, y, ["Neozep", "Bioflu", "Decolgen"])
    lp = branch.predict_log_proba(["NE0ZEP", "BI0FLU", "DEC0LGEN", ""])
    assert lp[:3].argmax(1).tolist() == [0, 1, 2]
    assert np.allclose(np.exp(lp[3]), 1 / 3)  # no text: no opinion


def test_text_branch_with_text_for_one_class_only_stays_unfitted():
    branch = TextBranch().fit(["NEOZEP", ""], np.array([0, 1]), ["Neozep", "Bioflu"])
    assert not branch.fitted_
    assert np.allclose(np.exp(branch.predict_log_proba(["NEOZEP"])), 0.5)


def test_lexicon_matches_fuzzily():
    lex = Lexicon({"Neozep": ["Neozep", "Phenylephrine"], "Bioflu": ["Bioflu", "Phenylephrine"]})
    s = lex.scores(["NE0ZEP tabs", "B1OFLU", ""], ["Neozep", "Bioflu"])
    assert s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0] and not s[2].any()


def test_packaged_minilm_encoder_tolerates_noise():
    enc = TransformerEncoder("minilm")
    a, b, c = enc.transform(["Neozep phenylephrine 500mg", "NEOZER phenylephrlne 50Omg", "fish oil omega-3"])
    assert a @ b > a @ c


def test_class_without_any_text_is_not_vetoed():
    texts = ["NEOZEP", "neozep tabs", "BIOFLU", "bioflu 500", "DECOLGEN", "decolgen 25", "", ""]
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])  # class 3 (loose pills, say) never shows text
    lp = TextBranch().fit(texts, y, ["Neozep", "Bioflu", "Decolgen", "Pills"]).predict_log_proba(["NEOZEP"])
    assert lp[0].argmax() == 0 and lp[0, 3] > np.log(1e-3)
