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

from score_jax.evaluation.metrics import inception_score

BOOTSTRAP = 20


def fit_pixel_classifier(points: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    """Logistic regression of labels [N] on flattened images points [N, D] (values in [0, 1])."""
    if len(np.unique(labels)) < 2:
        raise ValueError(
            "The classifier score needs a training split with at least two classes; this "
            f"dataset's labels are all {labels[0]} (an unlabelled dataset)."
        )
    return LogisticRegression(max_iter=2000).fit(points, labels)


def classifier_score(classifier: LogisticRegression, points: np.ndarray) -> dict:
    """{"classifier_score", "classifier_score_se"} of points [N, D]: `metrics.inception_score`
    of the classifier's log-probabilities, and a bootstrap standard error over the points."""
    log_p = classifier.predict_log_proba(points)
    rng = np.random.default_rng(0)
    boots = [
        inception_score(log_p[rng.integers(0, len(log_p), len(log_p))], splits=1)[0]
        for _ in range(BOOTSTRAP)
    ]
    return {
        "classifier_score": inception_score(log_p, splits=1)[0],
        "classifier_score_se": float(np.std(boots, ddof=1)),
    }
