"""PillClassifier: the predictor that hides the plumbing (OCR, caching, fusion) but exposes each branch."""
from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .backbones import DEFAULT_BACKBONE
from .data import VAL_SPLITS, Samples, decode, load_splits, pick, stratified_split
from .fusion import LogLinearFusion
from .images import ImageInput, load_image
from .metrics import branch_report, most_confused
from .ocr import OCRReader, OCRResult, create_ocr
from .products import lookalike_groups, seed_lexicon
from .text import TextBranch, log_softmax
from .training import TrainConfig
from .vision import ImageBranch

CONFIG_FILE, WEIGHTS_FILE = "multipill.json", "model.safetensors"


@dataclass
class Prediction:
    """One image's answer, with what each branch thought and what OCR read."""

    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    image_proba: dict[str, float]
    text_proba: Optional[dict[str, float]]
    text: str
    ocr_status: str
    source: str
    notes: list[str] = field(default_factory=list)


class PillClassifier:
    """Image branch + OCR text branch + late fusion, with fit/predict/predict_proba/evaluate/save/load."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, freeze: str = "frozen", ocr: str = "easyocr",
                 text: str = "char", fusion: bool = True, image_size: int = 224,
                 pretrained: bool | str = True, unfreeze_stages: Optional[int] = None, views: int = 4,
                 hflip: bool = True, epochs: int = 100, lr: float = 1e-4, batch_size: int = 32,
                 patience: int = 10, seed: int = 0, lexicon: Optional[str | dict[str, list[str]]] = None,
                 confusable_groups: Optional[list[list[str]]] = None, val_fraction: float = 0.15,
                 ocr_cache: Optional[str] = None, ocr_timeout: float = 60.0,
                 checkpoint_dir: Optional[str] = None, image_column: str = "image",
                 label_column: str = "label", progress: bool = True):
        self.backbone, self.freeze, self.ocr, self.text, self.fusion = backbone, freeze, ocr, text, fusion
        self.image_size, self.pretrained, self.unfreeze_stages = image_size, pretrained, unfreeze_stages
        self.views, self.hflip, self.epochs, self.lr = views, hflip, epochs, lr
        self.batch_size, self.patience, self.seed, self.lexicon = batch_size, patience, seed, lexicon
        self.confusable_groups, self.val_fraction = confusable_groups, val_fraction
        self.ocr_cache, self.ocr_timeout, self.checkpoint_dir = ocr_cache, ocr_timeout, checkpoint_dir
        self.image_column, self.label_column, self.progress = image_column, label_column, progress

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments, as scikit-learn estimators expose them (saved with the model)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {k: getattr(self, k) for k in names}

    # ----- building blocks -------------------------------------------------------------------------
    def _image_branch(self) -> ImageBranch:
        return ImageBranch(self.backbone, self.pretrained, self.freeze, self.unfreeze_stages, self.image_size,
                           self.views, self.hflip, TrainConfig(self.epochs, self.lr, self.batch_size,
                                                               self.patience, self.seed),
                           self.batch_size, self.progress)

    def _lexicon(self) -> Optional[dict[str, list[str]]]:
        return seed_lexicon() if self.lexicon == "seed" else self.lexicon

    def _reader(self) -> OCRReader:
        if getattr(self, "_ocr_reader", None) is None:
            self._ocr_reader = OCRReader(create_ocr(self.ocr if self.fusion else "none"), self.ocr_cache,
                                         self.ocr_timeout, self.progress)
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
            val_images, val_labels = [images[i] for i in va], [labels[i] for i in va]
            images, labels = [images[i] for i in tr], [labels[i] for i in tr]
        else:
            val_images, val_labels, _ = decode(val_s)
        unknown = sorted(set(val_labels) - set(classes))
        if unknown:
            warnings.warn(f"validation labels not in training data are left out: {unknown}")
            keep = [i for i, lab in enumerate(val_labels) if lab in classes]
            val_images, val_labels = [val_images[i] for i in keep], [val_labels[i] for i in keep]
        if not val_images:
            raise ValueError("no validation images of known classes: pass val= or more training images")
        self.classes_ = classes
        y = np.array([classes.index(c) for c in labels])
        vy = np.array([classes.index(c) for c in val_labels])

        self.image_ = self._image_branch().fit(images, y, val_images, vy, len(classes), self.checkpoint_dir)
        self.text_ = TextBranch(self.text, self._lexicon())
        self.fusion_ = LogLinearFusion(seed=self.seed)
        if self.fusion:
            reader = self._reader()
            train_ocr = reader.read(images, "OCR train")
            val_ocr = reader.read(val_images, "OCR validation")
            self.text_.fit([r.text for r in train_ocr], y, classes)
            img_lp = self._image_logp(val_images)
            txt_lp, conf, has = self._text_features(val_ocr)
            self.fusion_.fit(img_lp, txt_lp, conf, has, vy)
            # held-out diagnostics: each branch on the validation images, fusion cross-fitted on them
            self.validation_ = {"y": vy, "image": img_lp, "text": txt_lp, "fused_cv": self.fusion_.oof_,
                                "has_text": has}
        else:
            self.text_.fit([], np.array([], int), classes)
            self.fusion_.off("fusion=False")
        return self

    # ----- branches -------------------------------------------------------------------------------
    def _image_logp(self, images) -> np.ndarray:
        return log_softmax(self.image_.predict_logits(images).astype(np.float64))

    def _text_features(self, ocr: Sequence[OCRResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        texts = [r.text for r in ocr]
        has = np.array([bool(t.strip()) for t in texts]) & self.text_.fitted_
        return (self.text_.predict_log_proba(texts).astype(np.float64),
                np.array([r.confidence for r in ocr]), has)

    def _run(self, images: list) -> dict[str, Any]:
        """Both branches and the fused output for decoded images."""
        self._check_fitted()
        img_lp = self._image_logp(images)
        ocr = self._reader().read(images, "OCR") if self.fusion else [OCRResult(status="disabled")] * len(images)
        txt_lp, conf, has = self._text_features(ocr)
        fused = self.fusion_.predict_log_proba(img_lp, txt_lp, conf, has)  # image answer where fusion is off
        return {"image": img_lp, "text": txt_lp, "fused": fused, "has_text": has, "ocr": ocr}

    def _check_fitted(self) -> None:
        if not hasattr(self, "image_"):
            raise RuntimeError("this PillClassifier is not fitted: call fit() or PillClassifier.load()")

    @staticmethod
    def _as_list(images: Any) -> tuple[list, bool]:
        single = not isinstance(images, (list, tuple))
        return ([images] if single else list(images)), single

    # ----- predict --------------------------------------------------------------------------------
    def predict_proba(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """Fused class probabilities, shape (n_images, n_classes), columns in `classes_` order."""
        batch, _ = self._as_list(images)
        return np.exp(self._run([load_image(im) for im in batch])["fused"])

    def predict(self, images: ImageInput | Sequence[ImageInput], top_k: int = 5) -> Prediction | list[Prediction]:
        """Ranked answers with each branch's view; one Prediction for one input, a list for a list."""
        batch, single = self._as_list(images)
        out = self._run([load_image(im) for im in batch])
        preds = []
        for i, r in enumerate(out["ocr"]):
            p = np.exp(out["fused"][i])
            order = np.argsort(-p)[:top_k]
            used = "fused" if (out["has_text"][i] and self.fusion_.active) else "image"
            notes = []
            if r.status == "failed":
                notes.append(f"OCR failed ({r.error}); answered from the image alone")
            elif self.fusion and not out["has_text"][i]:
                notes.append("no text found; answered from the image alone")
            elif self.fusion and not self.fusion_.active:
                notes.append(f"fusion off: {self.fusion_.report_['decision']}")
            preds.append(Prediction(
                self.classes_[order[0]], float(p[order[0]]), [(self.classes_[j], float(p[j])) for j in order],
                dict(zip(self.classes_, np.exp(out["image"][i]).round(6).tolist())),
                dict(zip(self.classes_, np.exp(out["text"][i]).round(6).tolist())) if out["has_text"][i] else None,
                r.text, r.status, used, notes))
        return preds[0] if single else preds

    # ----- evaluate -------------------------------------------------------------------------------
    def evaluate(self, data: Any, split: Optional[str] = None, ignore_unknown: bool = False) -> dict:
        """Image-only, text-only and fused reports side by side, plus errors inside confusable groups."""
        self._check_fitted()
        splits = self._samples(data)
        samples = splits[split] if split else (pick(splits, ("test", *VAL_SPLITS)) or next(iter(splits.values())))
        images, labels, bad = decode(samples)
        unknown = sorted(set(labels) - set(self.classes_))
        if unknown and not ignore_unknown:
            raise ValueError(f"labels not seen in training: {unknown}; pass ignore_unknown=True to leave "
                             "those images out")
        keep = [i for i, lab in enumerate(labels) if lab in self.classes_]
        images = [images[i] for i in keep]
        y = np.array([self.classes_.index(labels[i]) for i in keep])
        if not len(y):
            raise ValueError("no images of known classes to evaluate")
        out = self._run(images)
        groups = self.confusable_groups or lookalike_groups()
        result: dict[str, Any] = {"classes": self.classes_, "n": int(len(y)), "skipped_unreadable": len(bad),
                                  "left_out_unknown": len(labels) - len(keep),
                                  "with_text": int(out["has_text"].sum()),
                                  "fusion": self.fusion_.report_}
        result["y_true"] = y.tolist()
        for name in ("image", "text", "fused") if self.fusion else ("image",):
            result[name] = branch_report(y, out[name], self.classes_, groups)
        result["most_confused_image"] = most_confused(result["image"]["confusion_matrix"], self.classes_)
        return result

    # ----- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write multipill.json (config, labels, OCR settings, reports) and model.safetensors. No pickle."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"image.{k}": v.detach().contiguous() for k, v in self.image_.state_dict().items()}
        tensors.update({f"text.{k}": torch.as_tensor(np.ascontiguousarray(v))
                        for k, v in self.text_.state().items()})
        if self.fusion_.active:
            tensors["fusion.params"] = torch.as_tensor(self.fusion_.params_)
        save_file(tensors, str(d / WEIGHTS_FILE))
        config = {"multipill_version": __version__, "params": self.get_params(), "classes": self.classes_,
                  "ocr_settings": self._reader().engine.settings(), "text_branch": self.text_.config(),
                  "fusion_report": self.fusion_.report_, "image_history": self.image_.history_}
        (d / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> "PillClassifier":
        """Rebuild a saved classifier; `overrides` may change run-time settings such as ocr_cache."""
        d = Path(directory)
        if not (d / CONFIG_FILE).exists():
            raise FileNotFoundError(f"{d}: no {CONFIG_FILE}; not a saved PillClassifier")
        config = json.loads((d / CONFIG_FILE).read_text())
        clf = cls(**{**config["params"], **overrides})
        clf.classes_ = config["classes"]
        tensors = load_file(str(d / WEIGHTS_FILE))
        clf.image_ = clf._image_branch()
        clf.image_.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("image.")},
                                   len(clf.classes_))
        clf.image_.history_ = config["image_history"]
        clf.text_ = TextBranch(**config["text_branch"])
        clf.text_.set_state(clf.classes_, {k[5:]: v.numpy() for k, v in tensors.items() if k.startswith("text.")})
        clf.fusion_ = LogLinearFusion(seed=clf.seed)
        clf.fusion_.params_ = tensors["fusion.params"].numpy() if "fusion.params" in tensors else None
        clf.fusion_.report_ = config["fusion_report"]
        return clf
