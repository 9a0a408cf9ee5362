"""Sample-quality figures for digit generators, against the 1,000 test digits.

- Fréchet distance (Heusel et al. 2017, eq. 6): ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})
  between Gaussians fitted to classifier features of real and generated digits.
- Class-histogram entropy H = -sum_c p_c log p_c of the classifier's predictions (log 10 = 2.303
  nats for a perfectly balanced generator; a collapsed one scores low).
- Nearest-training-neighbour L2 distance in pixel space: a generator that copies its training set
  scores far below real test digits do.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from .classifier import DigitClassifier


@torch.no_grad()
def features_and_preds(clf: DigitClassifier, x: torch.Tensor, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    clf.eval()
    feats, preds = [], []
    for i in range(0, len(x), batch):
        f = clf.features(x[i:i + batch].float())
        feats.append(f)
        preds.append(clf.head(f).argmax(1))
    return torch.cat(feats).double().numpy(), torch.cat(preds).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b`` (rows = samples)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def class_entropy(preds: np.ndarray, classes: int = 10) -> float:
    p = np.bincount(preds, minlength=classes) / max(len(preds), 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def nearest_neighbour_distance(x: torch.Tensor, train: torch.Tensor, batch: int = 250) -> np.ndarray:
    """For each row of ``x``, the L2 pixel distance to its nearest training image."""
    t = train.flatten(1).float()
    out = []
    for i in range(0, len(x), batch):
        out.append(torch.cdist(x[i:i + batch].flatten(1).float(), t).min(1).values)
    return torch.cat(out).numpy()


def generator_report(clf: DigitClassifier, samples: torch.Tensor, test: torch.Tensor, train: torch.Tensor,
                     labels: torch.Tensor | None = None) -> dict[str, float]:
    """All figures for ``samples`` (N, 1, 28, 28) in [0, 1]; ``labels`` = requested classes, if any."""
    f_gen, p_gen = features_and_preds(clf, samples)
    f_test, _ = features_and_preds(clf, test)
    nn_d = nearest_neighbour_distance(samples, train)
    out = {
        "frechet_distance": frechet_distance(f_gen, f_test),
        "class_entropy_nats": class_entropy(p_gen),
        "nn_distance_mean": float(nn_d.mean()),
        "nn_distance_min": float(nn_d.min()),
        "n": len(samples),
        "class_histogram": np.bincount(p_gen, minlength=10).tolist(),
    }
    if labels is not None:
        out["requested_class_accuracy"] = float((p_gen == labels.numpy()).mean())
    return out
