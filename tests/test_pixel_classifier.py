"""The pixel classifier's Inception-score-like statistic: its formula by hand, and on the digits."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO

from score_jax.config import load_config
from score_jax.evaluation.nfe_report import _split_points, make_scorer
from score_jax.evaluation.pixel_classifier import classifier_score


class FixedClassifier:
    """Stands in for the logistic regression: the same class probabilities whatever the input."""

    def __init__(self, probabilities):
        self.log_p = np.log(np.asarray(probabilities, np.float64))

    def predict_log_proba(self, points):
        return self.log_p


def score_of(probabilities) -> float:
    return classifier_score(FixedClassifier(probabilities), None)["classifier_score"]


def test_classifier_score_by_hand():
    # Confident and balanced over K classes: every KL is log K, the score is K.
    confident = np.full((100, 10), 1e-30)
    confident[np.arange(100), np.arange(100) % 10] = 1.0
    assert score_of(confident) == pytest.approx(10.0)
    # The same distribution for every sample: p(y|x) = p(y), the score is 1.
    assert score_of(np.tile([0.2, 0.3, 0.5], (7, 1))) == pytest.approx(1.0)
    # Two samples leaning 0.9 / 0.1 opposite ways: marginal (0.5, 0.5),
    # KL = 0.9 log 1.8 + 0.1 log 0.2 for both.
    expected = np.exp(0.9 * np.log(1.8) + 0.1 * np.log(0.2))
    assert score_of(np.array([[0.9, 0.1], [0.1, 0.9]])) == pytest.approx(expected)


def test_digits_test_split_scores_high_and_noise_low():
    """Fitted to the 1500 training digits through nfe-report's own loader: the 297 held-out test
    digits are confidently and evenly classified (about 7 of at most 10), pixel noise is not."""
    config = load_config(REPO / "configs" / "digits" / "vp_ddpmpp.py")
    score, test_examples = make_scorer(config, with_classifier=True)
    test = _split_points(config, "test")
    assert test_examples == len(test) == 297
    real = score(test)
    assert 6.0 < real["classifier_score"] < 8.0, real
    assert 0 < real["classifier_score_se"] < 0.3, real
    noise = np.random.default_rng(0).uniform(size=test.shape)
    assert score(noise)["classifier_score"] < 2.0


def test_unlabelled_data_is_refused():
    config = load_config(REPO / "configs" / "toy" / "mixture_vp.py")
    with pytest.raises(ValueError, match="at least two classes"):
        make_scorer(config, with_classifier=True)
