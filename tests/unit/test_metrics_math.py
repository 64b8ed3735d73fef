import numpy as np
import pytest

from training.calibrate import fit_temperature, threshold_for_precision, threshold_for_recall
from training.metrics import classification_report, expected_calibration_error


def test_report_on_a_hand_made_confusion_matrix() -> None:
    # true\pred  a  b
    #   a        3  1
    #   b        2  4
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
    probs = np.eye(2)[pred] * 0.8 + 0.1
    r = classification_report(y, probs, ["a", "b"])
    assert r["confusion_matrix"] == [[3, 1], [2, 4]]
    assert r["accuracy"] == pytest.approx(0.7)
    assert r["per_class"]["a"]["precision"] == pytest.approx(3 / 5)
    assert r["per_class"]["a"]["recall"] == pytest.approx(3 / 4)
    assert r["per_class"]["b"]["precision"] == pytest.approx(4 / 5)
    assert r["per_class"]["b"]["recall"] == pytest.approx(4 / 6)
    f1_a = 2 * 0.6 * 0.75 / 1.35
    f1_b = 2 * 0.8 * (2 / 3) / (0.8 + 2 / 3)
    assert r["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)
    assert r["macro_recall"] == pytest.approx((0.75 + 4 / 6) / 2)
    # Every prediction has confidence 0.9 and 70% are right: ECE = 0.2.
    assert r["ece"] == pytest.approx(0.2)


def test_ece_is_zero_when_confidence_matches_accuracy() -> None:
    y = np.array([0, 0, 0, 1])  # predicting 0 with 0.75 everywhere is right 3 times in 4
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(y, probs) == pytest.approx(0.0)


def test_temperature_softens_overconfident_logits() -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 2, (500,), generator=gen)
    noisy = torch.where(torch.rand(500, generator=gen) < 0.7, targets, 1 - targets)
    logits = torch.nn.functional.one_hot(noisy, 2).float() * 10  # 70% right, ~100% sure
    assert fit_temperature(logits, targets) > 5


def test_thresholds() -> None:
    scores = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.4, 0.2])
    positive = np.array([1, 1, 1, 0, 1, 0, 1, 0])
    # Top 3 are all positive (precision 1); top 5 hold 4 positives (0.8).
    assert threshold_for_precision(scores, positive, 1.0) == pytest.approx(0.9)
    assert threshold_for_precision(scores, positive, 0.8) == pytest.approx(0.7)
    assert threshold_for_precision(scores, np.zeros(8), 0.5) == 1.0
    # 5 positives: catching 80% (4) needs threshold 0.7.
    assert threshold_for_recall(scores, positive, 0.8) == pytest.approx(0.7)
