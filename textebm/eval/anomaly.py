"""Anomaly-detection metrics: AUPRC and AUROC of anomaly scores (higher score = more anomalous; label 1 = anomaly).

Both come from scikit-learn (``average_precision_score``, ``roc_auc_score``), imported when called.
"""
from __future__ import annotations

from ..extras import require

from typing import Dict, Mapping, Tuple

import numpy as np


class AnomalyMetricError(ValueError):
    """Scores / labels that an anomaly metric cannot use; the message says which and why."""


def _check(scores, labels, what: str = "scores") -> Tuple[np.ndarray, np.ndarray]:
    def as_np(a):
        try:
            import torch

            if isinstance(a, torch.Tensor):
                return a.detach().cpu().numpy()
        except ImportError:  # pragma: no cover
            pass
        return np.asarray(a)

    s = as_np(scores).astype(np.float64).reshape(-1)
    y = as_np(labels).reshape(-1)
    if len(s) != len(y):
        raise AnomalyMetricError(f"{what}: {len(s)} scores for {len(y)} labels; the lengths must match")
    if len(s) == 0:
        raise AnomalyMetricError(f"{what}: no scores")
    bad = ~np.isfinite(s)
    if bad.any():
        raise AnomalyMetricError(f"{what}: {int(bad.sum())} score(s) are NaN or inf; fix the scorer first")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1, False, True}:
        raise AnomalyMetricError(f"labels must be binary (1 = anomaly, 0 = normal), found values "
                                 f"{sorted(values)[:10]}")
    y = y.astype(np.int64)
    if len(np.unique(y)) < 2:
        raise AnomalyMetricError(f"labels hold only class {int(y[0])}; AUPRC / AUROC need both anomalies (1) "
                                 f"and normal examples (0)")
    return s, y


def auprc(scores, labels) -> float:
    """Area under the precision-recall curve as average precision: AP = sum_n (R_n - R_{n-1}) P_n.

    Thresholds run over the scores (higher = more anomalous); positives are label 1. A random scorer gives
    about the positive rate, a perfect one 1.
    """
    average_precision_score = require("sklearn.metrics", "AUPRC", "images").average_precision_score

    s, y = _check(scores, labels)
    return float(average_precision_score(y, s))


def auroc(scores, labels) -> float:
    """Area under the ROC curve: P(score of a random anomaly > score of a random normal), ties counted 1/2."""
    roc_auc_score = require("sklearn.metrics", "AUROC", "images").roc_auc_score

    s, y = _check(scores, labels)
    return float(roc_auc_score(y, s))


def anomaly_report(scores: Mapping[str, object], labels) -> Dict[str, object]:
    """AUPRC and AUROC of each named anomaly score, plus the positive (anomaly) rate mean(labels).

    Returns ``{name: {"auprc": a, "auroc": r}, ..., "positive_rate": p, "n": N, "n_anomalies": k}``
    (score names may not be ``positive_rate``, ``n`` or ``n_anomalies``).
    """
    if not scores:
        raise AnomalyMetricError("anomaly_report needs at least one named score array")
    reserved = {"positive_rate", "n", "n_anomalies"}
    clash = sorted(reserved & {str(k) for k in scores})
    if clash:
        raise AnomalyMetricError(f"score names {clash} are reserved for the report's totals; rename them")
    out: Dict[str, object] = {}
    y = None
    for name, s in scores.items():
        s_np, y = _check(s, labels, what=f"score {name!r}")
        out[str(name)] = {"auprc": auprc(s_np, y), "auroc": auroc(s_np, y)}
    out.update(positive_rate=float(y.mean()), n=int(len(y)), n_anomalies=int(y.sum()))
    return out
