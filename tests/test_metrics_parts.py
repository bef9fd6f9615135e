"""Part metrics: foreground IoU, landmark regression (% IOD), keypoint MAE (MCS), mean shape
and pose, NMI/ARI."""

from __future__ import annotations

import numpy as np
import pytest

from copart_hub.data.collections import five_landmarks
from copart_hub.metrics.parts import (
    fit_linear_regressor,
    foreground_iou,
    foreground_scores,
    keypoint_mae,
    labels_at_points,
    landmark_nmi_ari,
    landmark_regression_error,
    mean_pose_mae,
    mean_shape_error,
)


def test_foreground_precision_and_recall():
    labels = np.zeros((4, 4), int)
    labels[:, :3] = 2  # predicted: 12 pixels
    mask = np.zeros((4, 4), bool)
    mask[:2] = True  # true: 8 pixels, 6 of them predicted
    scores = foreground_scores(labels, mask)
    assert scores == pytest.approx({"fg_iou": 6 / 14, "fg_precision": 6 / 12, "fg_recall": 6 / 8})
    empty = foreground_scores(np.zeros((4, 4), int), mask)
    assert empty["fg_precision"] == 1.0 and empty["fg_recall"] == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        foreground_scores(labels, mask[:3])


def test_foreground_iou():
    labels = np.zeros((4, 4), dtype=int)
    labels[:2, :2] = 3
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert foreground_iou(labels, mask) == pytest.approx(0.5)
    assert foreground_iou(np.zeros((2, 2), int), np.zeros((2, 2), bool)) == 1.0
    with pytest.raises(ValueError, match="differ in size"):
        foreground_iou(labels, mask[:3])


def test_regression_recovers_an_affine_map_and_error_is_zero():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(50, 6))
    true = rng.normal(size=(6, 10))
    lms = (feats @ true + 3.0).reshape(50, 5, 2)
    lms[:, 1] += 10  # keep the eyes apart (IOD > 0)
    coef = fit_linear_regressor(feats, lms.reshape(50, -1))
    assert np.allclose(
        coef[-1], (np.full(10, 3.0) + np.tile([0, 0, 10, 10, 0, 0, 0, 0, 0, 0], 1)), atol=1e-6
    )
    err = landmark_regression_error(feats[:40], lms[:40], feats[40:], lms[40:])
    assert err["landmark_error_iod_pct"] == pytest.approx(0.0, abs=1e-6)


def test_mean_shape_error_known_value():
    train = np.zeros((2, 2, 2))
    train[:, 1, 0] = 10  # mean shape: eyes at (0, 0) and (10, 0)
    test = train[:1].copy()
    test[0] += [1.0, 0.0]  # shifted by 1 px; IOD = 10 -> 10 %
    assert mean_shape_error(train, test) == pytest.approx(10.0)


def test_keypoint_mae_is_zero_for_an_affine_map_and_skips_undetected_points():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 4))
    points = (feats @ rng.normal(size=(4, 6)) + 5.0).reshape(60, 3, 2)
    points[:10, 0] = np.nan  # keypoint 0 undetected in 10 training frames
    points[50:, 2, 1] = np.nan  # keypoint 2's y undetected in all test frames: not scored
    scores = keypoint_mae(feats[:50], points[:50], feats[50:], points[50:])
    assert scores["mae_coords"] == 5.0
    assert scores["mae_sum"] == pytest.approx(0.0, abs=1e-9)


def test_mean_pose_mae_known_value():
    train = np.zeros((4, 2, 2))
    train[:2] += 2.0  # mean pose: every coordinate at 1
    test = np.full((3, 2, 2), 4.0)  # 3 px off in each of the 4 coordinates
    test[0, 1, 0] = np.nan
    assert mean_pose_mae(train, test) == {"mae_sum": pytest.approx(12.0), "mae_coords": 4.0}


def test_five_landmarks_from_68():
    lm = np.zeros((68, 2))
    lm[36:42] = [1, 2]
    lm[42:48] = [3, 4]
    lm[30], lm[48], lm[54] = [5, 6], [7, 8], [9, 10]
    assert np.array_equal(five_landmarks(lm), [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]])


def test_labels_at_points_and_nmi_ari():
    labels = np.array([[[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0]]] * 3)
    pts = np.array([[[0, 0], [3, 1], [1, 2]]] * 3, dtype=float)  # on part 1, part 2, background
    assert labels_at_points(labels, pts).tolist() == [[1, 2, 0]] * 3
    scores = landmark_nmi_ari(labels, pts)
    assert scores["full_nmi"] == pytest.approx(100) and scores["full_ari"] == pytest.approx(100)
    shuffled = labels.copy()
    shuffled[1] = 3 - shuffled[1]  # parts swap meaning in one image
    shuffled[1][shuffled[1] == 3] = 0
    assert landmark_nmi_ari(shuffled, pts)["fg_ari"] < 100


def test_zoom_shift_moves_landmarks_with_pixels(tmp_path):
    from PIL import Image

    from copart_hub.data.collections import Collection, ZoomShiftCollection

    img = np.zeros((40, 60, 3), dtype=np.uint8)
    img[10, 45] = 255  # a single bright pixel at (x=45, y=10)
    Image.fromarray(img).save(tmp_path / "a.png")
    base = Collection("t", "val", [tmp_path / "a.png"], landmarks=np.array([[[45.0, 10.0]]]))
    zs = ZoomShiftCollection.of(base, scale_range=(0.5, 0.9), seed=3)
    out = np.asarray(zs.load_image(0).convert("L")).astype(float)
    y, x = np.unravel_index(out.argmax(), out.shape)
    lx, ly = zs.moved_landmarks()[0, 0]
    assert abs(x - lx) <= 1.0 and abs(y - ly) <= 1.0
    assert zs.load_image(0).size == (60, 40)
