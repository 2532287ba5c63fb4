"""Card pictures matched by local features: a studio picture and a shop photo of one pack share its printed
shapes (logo, drawings, lettering) where a whole-image embedding sees mostly shelf and light."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

PICTURE_SIDE = 400  # card pictures (often ~200 px) are enlarged to this shorter side so their print yields features
PHOTO_SIDE = 640  # photos are shrunk to at most this longer side: enough for a pack that fills part of the frame


@dataclass
class Keypoints:
    """One image's SIFT features: (n, 2) positions and (n, 128) descriptors (integers 0-255, kept as uint8)."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def _gray(image: Image.Image, shorter: Optional[int], longer: Optional[int]) -> np.ndarray:
    """Grey pixels, the shorter side enlarged to `shorter` or the longer side shrunk to `longer`."""
    factor = 1.0
    if shorter and min(image.size) < shorter:
        factor = shorter / min(image.size)
    elif longer and max(image.size) > longer:
        factor = longer / max(image.size)
    g = image.convert("L")
    if factor != 1.0:
        g = g.resize((max(1, round(g.width * factor)), max(1, round(g.height * factor))), Image.BILINEAR)
    return np.asarray(g)


class KeypointCardMatcher:
    """Scores a photo against each card's pictures by the number of SIFT matches that one homography explains.

    Features are found down to SIFT's `contrast` threshold (half OpenCV's 0.04: small shop photos of matte packs
    have faint print) and compared as RootSIFT (`root`: the square root of the L1-normalised descriptor, whose
    distances are Hellinger's, less swayed by one strong gradient); matches pass Lowe's ratio test (`ratio`) and
    RANSAC with `reprojection` pixels of tolerance; a class's score is log(1 + inliers) with its best picture, 0
    for a class whose card has no picture. The defaults were chosen on grocery `train` photos against the studio
    pictures (zero-shot top-1 on all 864: 0.743 with OpenCV's contrast, plain SIFT and ratio 0.8; 0.778 with the
    contrast and ratio; 0.800 with RootSIFT too). Photos' features can be extracted once (`extract`) and scored
    later (`scores_from`), so held-out photos need not be kept.
    """

    def __init__(self, features: int = 1000, ratio: float = 0.85, reprojection: float = 8.0, contrast: float = 0.02,
                 root: bool = True):
        self.features, self.ratio, self.reprojection = features, ratio, reprojection
        self.contrast, self.root = contrast, root

    def _sift(self):
        import cv2
        return cv2.SIFT_create(nfeatures=self.features, contrastThreshold=self.contrast)

    def _detect(self, gray: np.ndarray) -> Keypoints:
        points, desc = self._sift().detectAndCompute(gray, None)
        if desc is None or not len(points):
            return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
        if self.root:  # RootSIFT in [0, 1], kept as uint8 like SIFT's own 0-255
            desc = 255 * np.sqrt(desc / np.maximum(desc.sum(1, keepdims=True), 1e-7))
        return Keypoints(np.float32([p.pt for p in points]), np.clip(np.rint(desc), 0, 255).astype(np.uint8))

    def extract(self, images: Sequence[Image.Image]) -> list[Keypoints]:
        """Photos' features, at most PHOTO_SIDE on their longer side."""
        return [self._detect(_gray(im, None, PHOTO_SIDE)) for im in images]

    def fit(self, pictures: dict[str, Sequence[Image.Image]]) -> "KeypointCardMatcher":
        """Index every class's pictures (a card's, or a few photos) in one index of their features;
        a class without any is scored 0."""
        self.classes_: list[str] = []
        self.points_ = np.zeros((0, 2), np.float32)
        self.descriptors_ = np.zeros((0, 128), np.uint8)
        self.owner_, self.picture_class_ = np.zeros(0, np.int64), np.zeros(0, np.int64)
        return self.add(pictures)

    def add(self, pictures: dict[str, Sequence[Image.Image]]) -> "KeypointCardMatcher":
        """More classes' pictures (or more pictures of known ones) joined to the index, nothing else refitted."""
        for c in pictures:
            if c not in self.classes_:
                self.classes_.append(c)
        found = [(self.classes_.index(c), self._detect(_gray(im, PICTURE_SIDE, None)))
                 for c, ims in pictures.items() for im in ims]
        found = [(k, f) for k, f in found if len(f)]
        first = len(self.picture_class_)
        self.picture_class_ = np.concatenate([self.picture_class_, [k for k, _ in found]]).astype(np.int64)
        self.owner_ = np.concatenate([self.owner_, *[[first + j] * len(f) for j, (_, f) in enumerate(found)]]
                                     ).astype(np.int64)
        self.points_ = np.vstack([self.points_, *[f.points for _, f in found]]).astype(np.float32)
        self.descriptors_ = np.vstack([self.descriptors_, *[f.descriptors for _, f in found]]).astype(np.uint8)
        self._build()
        return self

    def _build(self) -> None:
        """Exact nearest neighbours by one matrix product: deterministic (a saved model answers as it did) and,
        over a few dozen pictures, as fast as an approximate index."""
        import torch
        self.index_ = torch.as_tensor(self.descriptors_, dtype=torch.float32) if len(self.descriptors_) >= 2 else None
        self.norms_ = (self.index_ ** 2).sum(1) if self.index_ is not None else None

    def _two_nearest(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each photo feature's nearest card feature and the distances to its two nearest, in chunks."""
        import torch
        nearest, dist = [], []
        with torch.no_grad():
            for start in range(0, len(descriptors), 256):
                q = torch.as_tensor(descriptors[start:start + 256], dtype=torch.float32)
                d2 = (q ** 2).sum(1, keepdim=True) + self.norms_[None, :] - 2 * q @ self.index_.T
                best = torch.topk(d2, 2, dim=1, largest=False)
                nearest.append(best.indices[:, 0].numpy())
                dist.append(best.values.clamp_min(0).sqrt().numpy())
        return np.concatenate(nearest), np.concatenate(dist)

    def state(self) -> dict[str, np.ndarray]:
        """The index's arrays, for safetensors (the class names and settings go in JSON: `config`)."""
        return {"points": self.points_, "descriptors": self.descriptors_, "owner": self.owner_,
                "picture_class": self.picture_class_}

    def config(self) -> dict:
        return {"features": self.features, "ratio": self.ratio, "reprojection": self.reprojection,
                "contrast": self.contrast, "root": self.root, "classes": self.classes_}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, np.ndarray]) -> "KeypointCardMatcher":
        """Rebuild a saved index (`config`, `state`) without the pictures; one saved before `contrast` and `root`
        existed keeps OpenCV's contrast and plain SIFT, as its photos' features were found."""
        m = cls(config["features"], config["ratio"], config["reprojection"], config.get("contrast", 0.04),
                config.get("root", False))
        m.classes_ = list(config["classes"])
        m.points_, m.descriptors_ = np.asarray(state["points"], np.float32), np.asarray(state["descriptors"], np.uint8)
        m.owner_, m.picture_class_ = np.asarray(state["owner"], np.int64), np.asarray(state["picture_class"], np.int64)
        m._build()
        return m

    def _best_inliers(self, photo: Keypoints) -> np.ndarray:
        """Per class, the inliers of its best picture: each photo feature's two nearest card features must pass
        the ratio test, so print that many cards share (a maker's logo) says nothing of which card it is."""
        import cv2
        out = np.zeros(len(self.classes_), np.int64)
        if self.index_ is None or len(photo) < 2:
            return out
        nearest, dist = self._two_nearest(photo.descriptors)
        photo_idx = np.flatnonzero(dist[:, 0] < self.ratio * dist[:, 1])
        if len(photo_idx) < 4:
            return out
        card_idx = nearest[photo_idx]
        owners = self.owner_[card_idx]
        for picture in np.unique(owners):
            sel = owners == picture
            if sel.sum() < 4:
                continue
            cv2.setRNGSeed(0)  # RANSAC's draws: the same photo gets the same score every time
            _, inliers = cv2.findHomography(self.points_[card_idx[sel]], photo.points[photo_idx[sel]], cv2.RANSAC,
                                            self.reprojection)
            k = self.picture_class_[picture]
            out[k] = max(out[k], 0 if inliers is None else int(inliers.sum()))
        return out

    def scores_from(self, photos: Sequence[Keypoints], classes: Sequence[str]) -> np.ndarray:
        """(n_photos, n_classes) log(1 + inliers) with each class's best picture; 0 where it has none."""
        cols = [self.classes_.index(c) if c in self.classes_ else -1 for c in classes]
        out = np.zeros((len(photos), len(classes)), np.float64)
        for i, photo in enumerate(photos):
            best = self._best_inliers(photo)
            out[i] = [np.log1p(best[c]) if c >= 0 else 0.0 for c in cols]
        return out

    def scores(self, images: Sequence[Image.Image], classes: Sequence[str]) -> np.ndarray:
        """(n_images, n_classes) match of each photo with each class's card pictures."""
        return self.scores_from(self.extract(images), classes)


def pack(photos: Sequence[Keypoints]) -> dict[str, np.ndarray]:
    """Many photos' features as three arrays (for safetensors): points, descriptors, and where each photo starts."""
    return {"points": np.vstack([np.zeros((0, 2), np.float32), *[p.points for p in photos]]).astype(np.float32),
            "descriptors": np.vstack([np.zeros((0, 128), np.uint8), *[p.descriptors for p in photos]]),
            "offsets": np.cumsum([0, *[len(p) for p in photos]]).astype(np.int64)}


def unpack(arrays: dict[str, np.ndarray]) -> list[Keypoints]:
    """`pack`'s arrays back as one Keypoints per photo."""
    o = np.asarray(arrays["offsets"])
    return [Keypoints(np.asarray(arrays["points"][a:b], np.float32), np.asarray(arrays["descriptors"][a:b], np.uint8))
            for a, b in zip(o[:-1], o[1:])]
