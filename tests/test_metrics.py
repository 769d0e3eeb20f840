"""The official metrics (faceptor_hf.evaluation.metrics) on small hand-computed cases: NME and its normalizers, the
CED's failure rate and Simpson AUC (with the official grid artifact and the pre-1.11 SciPy even-count rule), pooled
parsing F1 with NaN for absent classes, age, expression and attribute accuracy with the official rounding, and the
10-fold verification protocol with a hand-checkable threshold."""

import math

import numpy as np
import pytest
import torch

from faceptor_hf.evaluation import metrics


# ---- landmarks ----------------------------------------------------------------------------------------------------
def test_nme_is_the_mean_point_error_over_the_normalizer_per_image():
    targets = np.array([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 0.0], [0.0, 20.0]]])
    predictions = targets + np.array([[[3.0, 4.0], [0.0, 0.0]], [[6.0, 8.0], [0.0, -10.0]]])
    # image 0: errors 5 and 0 over d = 10 -> 0.25; image 1: errors 10 and 10 over d = 20 -> 0.5
    nme = metrics.landmark_nme(predictions, targets, [10.0, 20.0])
    np.testing.assert_allclose(nme, [0.25, 0.5])
    np.testing.assert_allclose(metrics.landmark_nme(torch.tensor(predictions), torch.tensor(targets),
                                                    torch.tensor([10.0, 20.0])), nme)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.landmark_nme(predictions[:, :1], targets, [1.0, 1.0])


@pytest.mark.parametrize("count, name, left, right", [
    (68, "inter_ocular", [36], [45]), (98, "inter_ocular", [60], [72]), (29, "inter_ocular", [8], [9]),
    (19, "inter_ocular", [6], [11]), (98, "inter_pupil", [96], [97]), (19, "inter_pupil", [7], [10]),
    (68, "inter_pupil", list(range(36, 42)), list(range(42, 48))),
])
def test_eye_normalizers_use_each_dataset_s_points(count, name, left, right):
    targets = np.full((1, count, 2), 1000.0)  # every other point far away: only the named ones may count
    spread = np.arange(len(left)) * 2.0 - (len(left) - 1)  # x offsets summing to 0: the left centroid is (0, 0)
    targets[0, left] = np.stack([spread, np.zeros(len(left))], -1)
    targets[0, right] = [30.0, 40.0]
    assert metrics.landmark_normalizers(name, targets) == pytest.approx([50.0])


def test_box_normalizers_and_their_errors():
    targets = np.zeros((2, 19, 2))
    boxes = np.array([[10.0, 20.0, 40.0, 140.0], [0.0, 0.0, 8.0, 2.0]])  # w 30 h 120; w 8 h 2
    np.testing.assert_allclose(metrics.landmark_normalizers("box", targets, boxes), [60.0, 4.0])
    np.testing.assert_allclose(metrics.landmark_normalizers("box_diagonal", targets, boxes),
                               [math.sqrt(30 ** 2 + 120 ** 2), math.sqrt(68.0)])
    with pytest.raises(ValueError, match="needs face boxes"):
        metrics.landmark_normalizers("box", targets)
    with pytest.raises(ValueError, match="no inter_ocular points are known for 5-point"):
        metrics.landmark_normalizers("inter_ocular", np.zeros((1, 5, 2)))
    five = np.zeros((1, 5, 2))
    five[0, 1] = [3.0, 4.0]
    assert metrics.landmark_normalizers("inter_ocular", five, points=([0], [1])) == pytest.approx([5.0])
    with pytest.raises(ValueError, match="unknown NME normalizer"):
        metrics.landmark_normalizers("eyes", targets)


def test_failure_rate_and_simpson_auc_by_hand():
    # CED steps from 0 to 1 between grid points 500 and 501 of the 1,001-point grid (odd: plain composite Simpson):
    # h/3 * (sum over k = 501..999 of 4 (odd k) or 2 (even k) + 1 for k = 1000) = 1e-4/3 * 1499.
    failure, auc = metrics.failure_rate_auc([0.05005], 0.1)
    assert failure == 0.0
    assert auc == pytest.approx(1e-4 / 3 * 1499 / 0.1, abs=1e-9)
    assert metrics.failure_rate_auc([0.05, 0.2], 0.1)[0] == 0.5
    # Every NME 0: the CED is 1 everywhere; at 0.07 the official grid ends at 0.0701 (702 points), so AUC > 1.
    assert len(np.arange(0.0, 0.07 + 1e-4, 1e-4)) == 702
    assert metrics.failure_rate_auc([0.0, 0.0], 0.1) == (0.0, pytest.approx(1.0, abs=1e-12))
    assert metrics.failure_rate_auc([0.0], 0.07)[1] == pytest.approx(0.0701 / 0.07, abs=1e-9)


def test_even_sample_count_uses_the_old_scipy_average_rule():
    # Grid 0, .1, .2, .3 (4 points) and CED 0, 0, 1, 1. Old simps(even="avg"): Simpson on the first three points
    # (0.1/3) + trapezoid on the last interval (0.1), and trapezoid on the first (0) + Simpson on the last three
    # (0.1/3 * 5); their mean is 0.15, so AUC = 0.15 / 0.3 = 0.5 (SciPy >= 1.11's simpson gives another value).
    failure, auc = metrics.failure_rate_auc([0.15], threshold=0.3, step=0.1)
    assert (failure, auc) == (0.0, pytest.approx(0.5, abs=1e-12))


# ---- parsing ------------------------------------------------------------------------------------------------------
def test_parsing_confusion_pools_masks_of_different_sizes_with_rows_as_targets():
    targets = [np.array([[0, 1], [1, 2]]), np.array([[2, 2, 0]])]
    predictions = [np.array([[0, 1], [2, 2]]), np.array([[2, 0, 0]])]
    confusion = metrics.parsing_confusion(predictions, targets, 3)
    assert confusion.dtype == np.int64
    assert confusion.tolist() == [[2, 0, 0], [0, 1, 1], [1, 0, 2]]
    assert metrics.parsing_confusion(predictions[0], targets[0], 3).sum() == 4
    with pytest.raises(ValueError, match="image 1: predicted mask"):
        metrics.parsing_confusion([predictions[0], np.zeros((2, 2))], targets, 3)
    with pytest.raises(ValueError, match="outside 0..2"):
        metrics.parsing_confusion([np.full((2, 2), 3)], [targets[0]], 3)


def test_parsing_f1_pools_counts_and_an_absent_class_is_nan():
    confusion = np.array([[2, 0, 0, 0], [0, 1, 1, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    scores = metrics.parsing_f1(confusion, ["background", "skin", "hair", "hat"])
    # F1_c = 2 H[c, c] / (column sum + row sum)
    assert scores["background"] == pytest.approx(4 / 5)
    assert scores["skin"] == pytest.approx(2 / 3)
    assert scores["hair"] == pytest.approx(4 / 6)
    assert math.isnan(scores["hat"]) and math.isnan(scores["mean"])  # never in targets nor predictions
    present = metrics.parsing_f1(confusion[:3, :3], ["background", "skin", "hair"])
    assert present["mean"] == pytest.approx((2 / 3 + 4 / 6) / 2)  # background left out
    assert metrics.parsing_f1(confusion[:3, :3], ["a", "b", "c"], background=None)["mean"] == pytest.approx(
        (4 / 5 + 2 / 3 + 4 / 6) / 3)


# ---- age and classification ---------------------------------------------------------------------------------------
def test_age_mae_and_cumulative_score():
    predicted, ages = [20.0, 30.0, 41.0, 60.0], [25.0, 30.0, 35.0, 50.0]
    assert metrics.age_mae(predicted, ages) == pytest.approx((5 + 0 + 6 + 10) / 4)
    assert metrics.cumulative_score(predicted, ages) == pytest.approx(50.0)  # |error| <= 5 counts
    assert metrics.cumulative_score(predicted, ages, years=6) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="3 predictions for 4 targets"):
        metrics.age_mae(predicted[:3], ages)


def test_classification_accuracy_is_overall_top1_percent():
    assert metrics.classification_accuracy(torch.tensor([0, 1, 2, 2]), np.array([0, 1, 1, 1])) == pytest.approx(50.0)


def test_attribute_accuracy_rounds_the_sigmoid_and_leaves_out_unknown_targets():
    logits = np.array([[0.0, 1e-9, 2.0], [-1.0, 3.0, 2.0], [5.0, -2.0, -1.0]], dtype=np.float32)
    targets = np.array([[0, 0, 1], [0, 1, -1], [1, 1, -1]])
    # round(sigmoid(0)) = round(0.5) = 0 and sigmoid(1e-9) is 0.5 in float32: both absent
    assert metrics.attribute_predictions(logits).tolist() == [[0, 0, 1], [0, 1, 1], [1, 0, 0]]
    accuracy = metrics.attribute_accuracy(logits, targets)
    np.testing.assert_allclose(accuracy, [100.0, 200 / 3, 100.0])  # attribute 2: only row 0 is known
    everything_unknown = metrics.attribute_accuracy(logits[:, :1], np.full((3, 1), -1))
    assert math.isnan(everything_unknown[0])


# ---- verification -------------------------------------------------------------------------------------------------
def _pairs(distances):
    """1-D embeddings whose pair i has squared L2 distance distances[i]."""
    embeddings = np.zeros((2 * len(distances), 1))
    embeddings[1::2, 0] = np.sqrt(distances)
    return embeddings


def test_verification_takes_the_first_best_threshold_of_the_other_folds():
    # Pairs 1-9 alternate same (d = 0.25) / different (d = 1.75); pair 0 is different at d = 0.7. Folds hold one pair.
    # On folds 1-9 the training pairs separate perfectly for t in (0.25, 0.7]; on fold 0 for t in (0.25, 1.75]. The
    # FIRST best threshold is 0.26 everywhere, so pair 0 (0.7 >= 0.26) is called different: every fold is right.
    # (Taking the last best threshold, 1.75, would get fold 0 wrong.)
    distances = [0.7] + [0.25 if i % 2 else 1.75 for i in range(1, 10)]
    same = [False] + [bool(i % 2) for i in range(1, 10)]
    assert metrics.verification_accuracy(_pairs(distances), same) == (pytest.approx(100.0), pytest.approx(0.0))
    # Pair 5 becomes a same pair at d = 2.0: no threshold below 4 catches it without losing the different pairs, so
    # 0.26 stays best; fold 5 scores 0 %, the others 100 %: mean 90, population std 30.
    distances[5], same[5] = 2.0, True
    assert metrics.verification_accuracy(_pairs(distances), same) == (pytest.approx(90.0), pytest.approx(30.0))


def test_verification_folds_are_contiguous_blocks_or_given_ids():
    assert metrics._fold_ids(12, 10).tolist() == [0, 0, 1, 1] + list(range(2, 10))  # sklearn KFold sizes
    distances = [0.25, 1.75] * 6
    same = [True, False] * 6
    ids = np.repeat(np.arange(3), 4)
    assert metrics.verification_accuracy(_pairs(distances), same, folds=ids)[0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="interleaved"):
        metrics.verification_accuracy(np.zeros((3, 2)), [True])
    with pytest.raises(ValueError, match="5 fold ids for 12 pairs"):
        metrics.verification_accuracy(_pairs(distances), same, folds=np.zeros(5))
