"""Card pictures matched by local features: a warped, shrunken view of a picture is matched to its class."""
import numpy as np
from PIL import Image, ImageFilter

from multipill.keypoints import KeypointCardMatcher, pack, unpack
from multipill.matchers import create_matcher


def texture(seed: int, size: int = 240) -> Image.Image:
    """A print-like picture: random blocks at several scales, blurred a little so corners are stable."""
    rng = np.random.default_rng(seed)
    layers = [np.kron(rng.random((size // s, size // s)), np.ones((s, s))) for s in (8, 16, 40)]
    grey = (sum(layers) / len(layers) * 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey, np.roll(grey, 7, 0), np.roll(grey, 11, 1)], 2)).filter(
        ImageFilter.GaussianBlur(0.8))


def photo_of(picture: Image.Image) -> Image.Image:
    """The picture seen at an angle, smaller, on a grey shelf."""
    w, h = picture.size
    seen = picture.transform((w, h), Image.Transform.PERSPECTIVE, (1.05, 0.08, -10, 0.03, 1.0, -6, 2e-4, 1e-4),
                             Image.Resampling.BILINEAR, fillcolor=(128, 128, 128))
    shelf = Image.new("RGB", (420, 320), (120, 124, 118))
    shelf.paste(seen.resize((w * 3 // 4, h * 3 // 4)), (90, 60))
    return shelf


def test_a_photo_is_matched_to_its_own_cards_picture_and_round_trips():
    pictures = {f"product {k}": [texture(k)] for k in range(3)}
    matcher = create_matcher("keypoints").fit(pictures)
    classes = [*pictures, "no picture"]
    photos = [photo_of(pictures[c][0]) for c in list(pictures)]
    scores = matcher.scores(photos, classes)
    assert (scores[:, :3].argmax(1) == np.arange(3)).all(), scores
    assert scores[np.arange(3), np.arange(3)].min() > np.log1p(10), scores  # many inliers, not a chance few
    assert (scores[:, 3] == 0).all()  # a class without any picture scores nothing
    # photos' features kept (as safetensors would) and the index rebuilt from its arrays score the same
    again = KeypointCardMatcher.from_state(matcher.config(), matcher.state())
    assert np.array_equal(again.scores_from(unpack(pack(matcher.extract(photos))), classes), scores)


def test_an_index_saved_before_the_contrast_and_rootsift_settings_keeps_plain_sift():
    matcher = KeypointCardMatcher().fit({"a": [texture(0)]})
    old = KeypointCardMatcher.from_state({k: v for k, v in matcher.config().items() if k not in ("contrast", "root")},
                                         matcher.state())
    assert (old.contrast, old.root) == (0.04, False)
    again = KeypointCardMatcher.from_state(matcher.config(), matcher.state())
    assert (again.contrast, again.root) == (matcher.contrast, matcher.root) == (0.02, True)
    plain, root = (KeypointCardMatcher(root=r).extract([texture(0)])[0].descriptors.astype(float) for r in (False, True))
    assert len(plain) == len(root) > 10  # the same features, described as RootSIFT (up to uint8 rounding)
    assert np.abs(root - 255 * np.sqrt(plain / plain.sum(1, keepdims=True))).max() <= 2


def test_pictures_added_later_join_the_index():
    matcher = KeypointCardMatcher().fit({"a": [texture(0)]})
    photo = photo_of(texture(1))
    assert matcher.scores([photo], ["a", "b"])[0, 1] == 0
    matcher.add({"b": [texture(1)]})
    assert matcher.classes_ == ["a", "b"] and matcher.scores([photo], ["a", "b"]).argmax() == 1


def test_blank_images_give_no_features_and_score_nothing():
    matcher = KeypointCardMatcher().fit({"a": [Image.new("RGB", (50, 50))]})
    assert len(matcher.descriptors_) == 0
    blank = matcher.extract([Image.new("RGB", (64, 64), (200, 200, 200))])
    assert len(blank[0]) == 0 and matcher.scores_from(blank, ["a"]).tolist() == [[0.0]]
    assert [len(p) for p in unpack(pack(blank))] == [0]
