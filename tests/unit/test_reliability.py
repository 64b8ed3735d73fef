import numpy as np
import pytest

from training.metrics import expected_calibration_error, reliability_bins


def test_reliability_bins_on_a_hand_made_example() -> None:
    # Top-label confidences: 0.55, 0.58 in (0.5, 0.6]; 0.65 in (0.6, 0.7]; 0.95 twice in (0.9, 1].
    probs = np.array(
        [
            [0.55, 0.45],  # pred 0, true 0: right, bin (0.5, 0.6]
            [0.42, 0.58],  # pred 1, true 0: wrong, bin (0.5, 0.6]
            [0.35, 0.65],  # pred 1, true 1: right, bin (0.6, 0.7]
            [0.95, 0.05],  # pred 0, true 0: right, bin (0.9, 1.0]
            [0.05, 0.95],  # pred 1, true 0: wrong, bin (0.9, 1.0]
        ]
    )
    y = np.array([0, 0, 1, 0, 0])
    bins = reliability_bins(y, probs, n_bins=10)
    assert len(bins) == 10
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 2, 1, 0, 0, 2]
    assert bins[0]["lower"] == pytest.approx(0.0)
    assert bins[9]["upper"] == pytest.approx(1.0)
    assert bins[5]["confidence"] == pytest.approx(0.565)
    assert bins[5]["accuracy"] == pytest.approx(0.5)
    assert bins[6]["confidence"] == pytest.approx(0.65)
    assert bins[6]["accuracy"] == pytest.approx(1.0)
    assert bins[9]["confidence"] == pytest.approx(0.95)
    assert bins[9]["accuracy"] == pytest.approx(0.5)
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None


def test_reliability_bins_add_up_to_the_ece() -> None:
    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=200)
    y = rng.integers(0, 3, size=200)
    bins = reliability_bins(y, probs, n_bins=10)
    assert sum(b["count"] for b in bins) == 200
    ece = sum(b["count"] / 200 * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    assert ece == pytest.approx(expected_calibration_error(y, probs, 10))


def test_reliability_bins_of_no_examples_are_empty() -> None:
    bins = reliability_bins(np.array([], dtype=int), np.zeros((0, 2)), n_bins=5)
    assert [b["count"] for b in bins] == [0] * 5
