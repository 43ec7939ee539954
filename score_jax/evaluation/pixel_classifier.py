"""A sample-quality score that needs no downloaded weights, for small labelled image datasets.

The Inception score's formula, exp(mean_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over
the samples, on a multinomial logistic regression fitted to the training split's pixels instead
of an Inception network: high when each sample is confidently one class and the classes are
spread over the samples (at most the number of classes). On the digits the regression is 97-98%
accurate on the test split, so a speckled or ambiguous digit lowers the score.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

BOOTSTRAP = 20


def fit_pixel_classifier(points: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    """Logistic regression of labels [N] on flattened images points [N, D] (values in [0, 1])."""
    if len(np.unique(labels)) < 2:
        raise ValueError(
            "The classifier score needs a training split with at least two classes; this "
            f"dataset's labels are all {labels[0]} (an unlabelled dataset)."
        )
    return LogisticRegression(max_iter=2000).fit(points, labels)


def inception_like_score(probabilities: np.ndarray) -> float:
    """exp(mean_i KL(p_i || mean_j p_j)) of class probabilities [N, K]."""
    p = np.asarray(probabilities, np.float64)
    marginal = p.mean(axis=0)
    tiny = np.finfo(np.float64).tiny  # 0 log 0 = 0
    kl = (p * (np.log(p + tiny) - np.log(marginal + tiny))).sum(axis=1)
    return float(np.exp(kl.mean()))


def classifier_score(classifier: LogisticRegression, points: np.ndarray) -> dict:
    """{"classifier_score", "classifier_score_se"} of points [N, D]; the standard error is a
    bootstrap over the points (seeded)."""
    p = classifier.predict_proba(points)
    rng = np.random.default_rng(0)
    boots = [inception_like_score(p[rng.integers(0, len(p), len(p))]) for _ in range(BOOTSTRAP)]
    return {
        "classifier_score": inception_like_score(p),
        "classifier_score_se": float(np.std(boots, ddof=1)),
    }
