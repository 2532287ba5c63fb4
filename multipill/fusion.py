"""Late fusion: a log-linear pool of the two branches, fitted on held-out predictions, kept only if it helps."""
from __future__ import annotations

import numpy as np
import torch


class LogLinearFusion:
    """fused logits = a * image log-probs + (b + c * OCR confidence) * text log-probs + class bias.

    The same pool joins the text branch's two sources: what it learned from photos (as "image") and what
    the product cards say (as "text").

    Few parameters on purpose: it is fitted on a validation split that may hold only a few images per class.
    Samples without text never reach it: their answer is the image branch's.
    """

    def __init__(self, l2: float = 1e-2, folds: int = 5, seed: int = 0):
        self.l2, self.folds, self.seed = l2, folds, seed

    @staticmethod
    def _logits(w: torch.Tensor, bias: torch.Tensor, img, txt, conf) -> torch.Tensor:
        return w[0] * img + (w[1] + w[2] * conf[:, None]) * txt + bias

    def _fit(self, img: np.ndarray, txt: np.ndarray, conf: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = [torch.as_tensor(a, dtype=torch.float64) for a in (img, txt, conf)]
        target = torch.as_tensor(y, dtype=torch.long)
        w = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(img.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self._logits(w, bias, *t), target)
            loss = loss + self.l2 * (bias ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return np.concatenate([w.detach().numpy(), bias.detach().numpy()])

    def _apply(self, params: np.ndarray, img, txt, conf) -> np.ndarray:
        p, i, t, c = (torch.as_tensor(a, dtype=torch.float64) for a in (params, img, txt, conf))
        return torch.log_softmax(self._logits(p[:3], p[3:], i, t, c), dim=1).numpy()

    def fit(self, img_logp: np.ndarray, txt_logp: np.ndarray, conf: np.ndarray, has_text: np.ndarray,
            y: np.ndarray) -> "LogLinearFusion":
        """Fit on held-out predictions; cross-validation decides whether fusion beats image-only."""
        idx = np.flatnonzero(has_text)
        self.params_ = None
        self.oof_ = img_logp.copy()  # cross-fitted fused log-probs on these held-out images
        self.report_ = {"n_with_text": int(len(idx)), "n": int(len(y))}
        if len(idx) < max(self.folds, 2 * len(np.unique(y))):
            self.report_["decision"] = "image-only: too few held-out images with text to fit fusion"
            return self
        img, txt, c, yy = img_logp[idx], txt_logp[idx], conf[idx], y[idx]
        rng = np.random.default_rng(self.seed)
        fold = rng.permutation(len(idx)) % self.folds
        oof = np.zeros_like(img)
        for k in range(self.folds):
            test = fold == k
            params = self._fit(img[~test], txt[~test], c[~test], yy[~test])
            oof[test] = self._apply(params, img[test], txt[test], c[test])
        self.oof_[idx] = oof
        fused_acc = float((oof.argmax(1) == yy).mean())
        image_acc = float((img.argmax(1) == yy).mean())
        fused_nll = float(-oof[np.arange(len(yy)), yy].mean())
        image_nll = float(-img[np.arange(len(yy)), yy].mean())
        helps = fused_acc > image_acc or (fused_acc == image_acc and fused_nll < image_nll)
        self.report_.update({"cv_fused_accuracy": fused_acc, "cv_image_accuracy": image_acc,
                             "cv_fused_nll": fused_nll, "cv_image_nll": image_nll})
        if helps:
            self.params_ = self._fit(img, txt, c, yy)
            self.report_["decision"] = "fused: cross-validated fusion beats image-only on held-out data"
        else:
            self.report_["decision"] = "image-only: fusion did not beat image-only on held-out data"
        return self

    def off(self, reason: str) -> "LogLinearFusion":
        """Use the image branch alone, recording why."""
        self.params_, self.report_ = None, {"decision": f"image-only: {reason}"}
        return self

    @property
    def active(self) -> bool:
        return self.params_ is not None

    def predict_log_proba(self, img_logp: np.ndarray, txt_logp: np.ndarray, conf: np.ndarray,
                          has_text: np.ndarray) -> np.ndarray:
        """Fused log-probabilities; rows without text (or with fusion off) are the image branch's."""
        out = img_logp.copy()
        idx = np.flatnonzero(has_text)
        if self.active and len(idx):
            out[idx] = self._apply(self.params_, img_logp[idx], txt_logp[idx], conf[idx])
        return out
