"""Classes known from their cards alone: scored against the trained classes' answers from card text and pictures."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from scipy.special import logsumexp


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prototype(features: np.ndarray) -> np.ndarray:
    """One class's prototype: the mean direction of its reference images' features."""
    return normalise(normalise(features).mean(0))


def cosine(features: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """(n, n_prototypes) cosine similarity."""
    return normalise(features) @ normalise(prototypes).T if len(prototypes) else np.zeros((len(features), 0))


def background_stats(prototypes: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(n_prototypes, 2): mean and spread of each prototype's similarity to photos of other products."""
    cos = cosine(background, prototypes)
    return np.stack([cos.mean(0), np.maximum(cos.std(0), 1e-6)], axis=1) if len(cos) else np.zeros((0, 2))


def similarity(features: np.ndarray, prototypes: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Cosine to each prototype in units of its spread above its background mean: a prototype of shop photos
    is near every shop photo, a studio picture near none, and this puts both on one footing."""
    return (cosine(features, prototypes) - stats[:, 0]) / stats[:, 1]


def as_enrolled(logp: np.ndarray, columns: Sequence[int], scores: np.ndarray) -> np.ndarray:
    """A branch's log-probabilities as if the classes in `columns` had been enrolled, not trained: the others
    renormalised without them (what a branch that never learned them says), each given its enrolled score
    (`scores`, (n, len(columns)), as in `fit_enrol_scale`)."""
    out = np.asarray(logp, np.float64).copy()
    others = ~np.isin(np.arange(out.shape[1]), columns)
    out[:, others] = renormalised(out, others)
    out[:, list(columns)] = scores
    return out - logsumexp(out, axis=1, keepdims=True)


def covering_sets(classes: Sequence[int], size: int, repeats: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Seeded sets of at most `size` of `classes`, each class in exactly `repeats` of them: pretend enrolments
    that put every held-out photo's product among enrolled siblings as often as any other's."""
    parts = -(-len(classes) // max(size, 1))
    return [np.sort(part) for _ in range(repeats) for part in np.array_split(rng.permutation(classes), parts)]


def fit_enrol_scale(logits: np.ndarray, scores: np.ndarray, y: np.ndarray, pretend: Sequence[int]
                    ) -> tuple[float, float]:
    """Scale and shift that put an enrolled class's score (picture similarity, card-text match) on the
    branch's own logit scale, so it competes fairly with the trained classes.

    Fitted by pretending, on held-out images, that each class in `pretend` had been enrolled: the branch's
    log-probabilities of the other classes are renormalised without it (what a branch that never learned it
    would say: its photos go to the nearest trained classes), its own is scale * `scores[:, j]` + shift (the
    score it gets as an enrolled class, for `pretend[j]`), and the likelihood of the true labels is maximised.
    """
    if not len(pretend) or not len(y):
        return 1.0, 0.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    s = torch.as_tensor(np.asarray(scores, np.float64))
    target = torch.as_tensor(y, dtype=torch.long)
    params = torch.tensor([1.0, -float(np.log(z.shape[1]))], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = 0
        for j, k in enumerate(pretend):
            others = torch.arange(z.shape[1]) != k
            zk = z.clone()
            zk[:, others] = torch.log_softmax(z[:, others], dim=1)
            zk[:, k] = params[0] * s[:, j] + params[1]
            loss = loss + torch.nn.functional.cross_entropy(zk, target)
        loss = loss / len(pretend)
        loss.backward()
        return loss

    opt.step(closure)
    scale, shift = params.detach().tolist()
    return float(scale), float(shift)


FEATURES = 8  # what `enrolled_features` gives per enrolled class; saved heads with another number are refitted


def unclaimed(logp: np.ndarray) -> np.ndarray:
    """(n,) log of the probability a trained answer leaves beyond its top class."""
    return np.log(np.clip(1 - np.exp(np.asarray(logp, np.float64).max(1)), 1e-6, 1))


def keypoint_evidence(kp: np.ndarray, columns: Sequence[int], pictured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each enrolled column's keypoint match (`keypoints.KeypointCardMatcher` scores over every class; 0 where it
    has no picture) and its margin over the best other class's: a photo matching several cards matches none."""
    kp = np.array(kp, np.float64)
    columns = list(columns)
    kp[:, columns] *= np.broadcast_to(np.asarray(pictured, np.float64), (len(kp), len(columns)))
    own = kp[:, columns]
    others = np.stack([np.delete(kp, j, axis=1).max(1, initial=0.0) for j in columns], axis=1) if columns \
        else own
    return own, own - others


def enrolled_features(sim: np.ndarray, cards: np.ndarray, columns: Sequence[int], pictured: np.ndarray,
                      rest: np.ndarray, kp: Optional[np.ndarray] = None) -> np.ndarray:
    """(n, len(columns), FEATURES) evidence for each enrolled class on photos whose text was read: picture
    similarity (0 for a class without a picture), card-text match, that match's log share among all cards'
    matches, a constant, whether the class has a picture (a card with nothing but a name needs its own constant),
    `rest`, what the trained answer leaves beyond its top class (`unclaimed`): the trained answer is often
    unsure on a photo of a product it was never trained on, while its confident answers are mostly right; and the
    pictures' keypoint match with its margin over other cards (`keypoint_evidence`; 0 without `kp`)."""
    share = np.asarray(cards, np.float64) - logsumexp(cards, axis=1, keepdims=True)
    columns, pictured = list(columns), np.broadcast_to(np.asarray(pictured, np.float64), np.shape(sim))
    own, margin = (keypoint_evidence(kp, columns, pictured) if kp is not None
                   else (np.zeros(np.shape(sim)), np.zeros(np.shape(sim))))
    return np.stack([sim * pictured, cards[:, columns], share[:, columns], np.ones_like(pictured), pictured,
                     np.broadcast_to(np.asarray(rest, np.float64)[:, None], np.shape(sim)), own, margin], axis=2)


def with_cut(cards: np.ndarray, cut: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """`cards` with `columns` taken from `cut`: the pretended classes matched by cards of the enrolled kind."""
    out = np.array(cards, np.float64)
    out[:, columns] = cut[:, columns]
    return out


def mirrored(n: int, pictured: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which of `n` pretend-enrolled classes have a picture, in the same share as the real enrolled ones."""
    out = np.zeros(n, bool)
    out[rng.permutation(n)[:int(round(n * np.mean(pictured)))]] = True
    return out


def renormalised(logp: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Log-probabilities over the `keep` columns alone: what an answer that never knew the others says."""
    out = logp[:, keep]
    return out - logsumexp(out, axis=1, keepdims=True)


class EnrolmentHead:
    """Scores enrolled classes against the trained ones' fused answer from their pictures and card text.

    Fitted by pretending, on held-out photos, that seeded sets of trained classes (as many as are enrolled, up to
    half) had been enrolled: their columns of the fused answer are dropped and replaced by the head's score from
    their card text and card pictures, and the likelihood of the true labels is maximised. Pretended classes
    have pictures in the enrolled classes' share and cards cut to the enrolled cards' kind. The weight of the
    evidence is thereby learned jointly with the comparison against the trained classes. Then the constant is
    lowered, if needed, until the real enrolled classes cost the trained ones' held-out photos at most `max_cost`
    accuracy.
    """

    def __init__(self, max_cost: float = 0.02, sets: int = 200, l2: float = 1e-3, seed: int = 0):
        self.max_cost, self.sets, self.l2, self.seed = max_cost, sets, l2, seed

    def fit(self, answer: np.ndarray, y: np.ndarray, pretend_sim: np.ndarray, pretend: Sequence[int],
            cards: np.ndarray, real: np.ndarray, pictured: np.ndarray, cut: Optional[np.ndarray] = None,
            kp: Optional[np.ndarray] = None) -> "EnrolmentHead":
        """`answer`: held-out fused log-probs over the trained classes; `pretend_sim`: those photos' picture
        similarity to the classes in `pretend`; `cards`: their card-text match with every trained class;
        `real`: `enrolled_features` of the enrolled classes on them, `pictured` which of those have a picture
        (pretended classes have one in the same share); `cut`: their match with the trained classes' cards cut
        to the enrolled cards' kind (`card_text.cut_to`), which pretended classes are scored by while the others
        keep `cards` (default: `cards`, the enrolled cards being of the trained ones' kind); `kp`: their keypoint
        match with every class's pictures (`enrolled_features`; default none)."""
        cut = cards if cut is None else cut
        n_classes, n_enrolled = answer.shape[1], real.shape[1]
        size = max(1, min(n_enrolled, len(pretend) // 2))
        rng = np.random.default_rng(self.seed)
        data = []
        for _ in range(self.sets if len(pretend) > size else 1):
            chosen = np.sort(rng.choice(len(pretend), size, replace=False))
            enrolled = np.asarray(pretend)[chosen]
            trained = np.setdiff1d(np.arange(n_classes), enrolled)
            order = np.argsort(np.concatenate([trained, enrolled]))  # class -> column in [trained, enrolled]
            z = renormalised(answer, trained)
            data.append((torch.as_tensor(z),
                         torch.as_tensor(enrolled_features(pretend_sim[:, chosen], with_cut(cards, cut, enrolled),
                                                           enrolled,
                                                           mirrored(size, pictured, rng), unclaimed(z), kp)),
                         torch.as_tensor(order[y])))
        w = torch.zeros(FEATURES, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = sum(torch.nn.functional.cross_entropy(torch.cat([z, f @ w], 1), t) for z, f, t in data)
            loss = loss / len(data) + self.l2 * (w ** 2).sum()
            loss.backward()
            return loss

        if len(y):
            opt.step(closure)
        self.weights_ = w.detach().numpy()
        before = float((answer.argmax(1) == y).mean()) if len(y) else 0.0
        after, lowered = self._accuracy(answer, real, y), 0.0
        while len(y) and after < before - self.max_cost:
            self.weights_[3] -= 0.25
            lowered += 0.25
            after = self._accuracy(answer, real, y)
        self.report_ = {"weights": self.weights_.tolist(), "pretend_sets": len(data), "pretend_size": size,
                        "pictured_share": float(np.mean(pictured)),
                        "constant_lowered_by": lowered, "held_out_n": int(len(y)),
                        "held_out_accuracy_before": before, "held_out_accuracy_after": after}
        return self

    def _accuracy(self, answer: np.ndarray, real: np.ndarray, y: np.ndarray) -> float:
        """The trained classes' held-out accuracy once the real enrolled classes compete for their photos."""
        return float((np.hstack([answer, self.logits(real)]).argmax(1) == y).mean())

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(n, n_enrolled) scores on the fused answer's log-probability scale."""
        return features @ self.weights_

    def to_json(self) -> dict:
        """Settings and fit report (weights included), saved in the model's JSON."""
        return {"max_cost": self.max_cost, "sets": self.sets, "l2": self.l2, "seed": self.seed, "report": self.report_}

    @classmethod
    def from_json(cls, d: dict) -> "EnrolmentHead":
        head = cls(d["max_cost"], d["sets"], d["l2"], d["seed"])
        head.report_ = d["report"]
        head.weights_ = np.asarray(d["report"]["weights"], np.float64)
        return head

    def outdated(self) -> bool:
        """Whether these weights are for other evidence than `enrolled_features` gives (an older save)."""
        return len(self.weights_) != FEATURES
