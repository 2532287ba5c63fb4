import numpy as np

from multipill.fusion import LogLinearFusion
from multipill.text import log_softmax


def _data(n=120, k=3, seed=0, text_quality=4.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(k, size=n)
    onehot = np.eye(k)[y]
    img = log_softmax(rng.normal(0, 1, (n, k)) + 0.8 * onehot)  # a weak image branch
    txt = log_softmax(rng.normal(0, 1, (n, k)) + text_quality * onehot)
    return img, txt, rng.uniform(0.5, 1, n), y


def test_fusion_helps_when_text_is_informative_and_keeps_image_answer_without_text():
    img, txt, conf, y = _data()
    has = np.ones(len(y), bool)
    has[::4] = False
    fusion = LogLinearFusion().fit(img, txt, conf, has, y)
    assert fusion.active, fusion.report_
    fused = fusion.predict_log_proba(img, txt, conf, has)
    assert np.array_equal(fused[~has], img[~has])
    t_img, t_txt, t_conf, t_y = _data(seed=1)
    t_has = np.ones(len(t_y), bool)
    acc_f = (fusion.predict_log_proba(t_img, t_txt, t_conf, t_has).argmax(1) == t_y).mean()
    assert acc_f > (t_img.argmax(1) == t_y).mean() + 0.2


def test_fusion_falls_back_when_text_is_noise():
    img, _, conf, y = _data()
    rng = np.random.default_rng(5)
    noise = log_softmax(rng.normal(0, 3, img.shape))
    fusion = LogLinearFusion().fit(img, noise, conf, np.ones(len(y), bool), y)
    if fusion.active:  # allowed only if cross-validation showed it not worse
        assert fusion.report_["cv_fused_accuracy"] >= fusion.report_["cv_image_accuracy"]
    else:
        assert fusion.report_["decision"].startswith("image-only")
        assert np.array_equal(fusion.predict_log_proba(img, noise, conf, np.ones(len(y), bool)), img)


def test_too_few_texts_means_image_only():
    img, txt, conf, y = _data(n=20)
    fusion = LogLinearFusion().fit(img, txt, conf, np.zeros(20, bool), y)
    assert not fusion.active and "too few" in fusion.report_["decision"]
