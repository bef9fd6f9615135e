"""Part-segmentation metrics with named protocols (SPEC B1, B2b, B3)."""

from __future__ import annotations

import numpy as np


def foreground_iou(labels: np.ndarray, mask: np.ndarray) -> float:
    """IoU of predicted foreground (label != 0) with a GT mask (GANSeg / MCS definition)."""
    return foreground_scores(labels, mask)["fg_iou"]


def foreground_scores(labels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``fg_iou``, ``fg_precision`` (share of the predicted foreground inside the mask) and
    ``fg_recall`` (share of the mask predicted) of the foreground (label != 0) against a GT
    mask; an empty prediction (mask) has precision (recall) 1."""
    if labels.shape != mask.shape:
        raise ValueError(f"labels {labels.shape} and mask {mask.shape} differ in size")
    pred, gt = labels != 0, mask.astype(bool)
    inter = float(np.logical_and(pred, gt).sum())
    union, n_pred, n_gt = np.logical_or(pred, gt).sum(), pred.sum(), gt.sum()
    return {
        "fg_iou": inter / union if union else 1.0,
        "fg_precision": inter / n_pred if n_pred else 1.0,
        "fg_recall": inter / n_gt if n_gt else 1.0,
    }


def _design(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1))], 1)


def fit_linear_regressor(features: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Affine least squares ``targets ~ [features, 1] @ B`` (what SCOPS's standardised
    ``LinearRegression(fit_intercept=False)`` amounts to). Returns ``B`` ``[F+1, T]``."""
    if len(features) != len(targets) or len(features) == 0:
        raise ValueError("need the same, non-zero number of feature and target rows")
    coef, *_ = np.linalg.lstsq(_design(features), targets, rcond=None)
    return coef


def landmark_regression_error(
    train_features: np.ndarray,
    train_landmarks: np.ndarray,
    test_features: np.ndarray,
    test_landmarks: np.ndarray,
) -> dict[str, float]:
    """SCOPS protocol B1: regress landmarks ``[N, L, 2]`` from part centres ``[N, 2K]``.

    Error per test image = mean over landmarks of ``||pred - gt||_2 / IOD`` with IOD the
    distance between GT landmarks 0 and 1 (eye centres); reported as a mean in % of IOD.
    """
    n_lm = train_landmarks.shape[1]
    coef = fit_linear_regressor(train_features, train_landmarks.reshape(len(train_landmarks), -1))
    pred = (_design(test_features) @ coef).reshape(-1, n_lm, 2)
    iod = np.linalg.norm(test_landmarks[:, 0] - test_landmarks[:, 1], axis=-1)
    err = np.linalg.norm(pred - test_landmarks, axis=-1).mean(1) / np.maximum(iod, 1e-6)
    return {"landmark_error_iod_pct": float(err.mean() * 100)}


def keypoint_mae(
    train_features: np.ndarray,
    train_points: np.ndarray,
    test_features: np.ndarray,
    test_points: np.ndarray,
) -> dict[str, float]:
    """MCS protocol B4: one affine regressor per keypoint coordinate from part centres
    ``[N, 2K]`` to keypoints ``[N, P, 2]`` (NaN = undetected: those frames are skipped for that
    keypoint). Returns ``mae_sum`` (sum of the per-coordinate test MAEs, pixels) and
    ``mae_coords`` (how many of the 2P coordinates could be fitted and scored)."""
    maes = []
    for j in range(train_points.shape[1]):
        for c in range(2):
            fit, test = ~np.isnan(train_points[:, j, c]), ~np.isnan(test_points[:, j, c])
            if not fit.any() or not test.any():
                continue
            coef = fit_linear_regressor(train_features[fit], train_points[fit, j, c : c + 1])
            pred = _design(test_features[test]) @ coef
            maes.append(float(np.abs(pred[:, 0] - test_points[test, j, c]).mean()))
    return {"mae_sum": float(np.sum(maes)), "mae_coords": float(len(maes))}


def mean_pose_mae(train_points: np.ndarray, test_points: np.ndarray) -> dict[str, float]:
    """:func:`keypoint_mae` of the mean training pose (regression from no features): the score
    any part-centre regressor has to beat."""
    no_features = np.zeros((len(train_points), 0)), np.zeros((len(test_points), 0))
    return keypoint_mae(no_features[0], train_points, no_features[1], test_points)


def mean_shape_error(train_landmarks: np.ndarray, test_landmarks: np.ndarray) -> float:
    """Error (% IOD) of predicting the mean training shape for every test image."""
    pred = train_landmarks.mean(0, keepdims=True)
    iod = np.linalg.norm(test_landmarks[:, 0] - test_landmarks[:, 1], axis=-1)
    err = np.linalg.norm(pred - test_landmarks, axis=-1).mean(1) / np.maximum(iod, 1e-6)
    return float(err.mean() * 100)


def labels_at_points(labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Nearest-pixel lookup of label maps ``[N, H, W]`` at points ``[N, L, 2]`` (x, y)."""
    n, h, w = labels.shape
    x = np.clip(np.round(points[..., 0]).astype(int), 0, w - 1)
    y = np.clip(np.round(points[..., 1]).astype(int), 0, h - 1)
    return labels[np.arange(n)[:, None], y, x]


def landmark_nmi_ari(labels: np.ndarray, points: np.ndarray) -> dict[str, float]:
    """NMI / ARI (x100) between landmark identity and the part label under each landmark.

    ``full`` uses every landmark (background included as a label); ``fg`` only the landmarks
    that fall on a part (label != 0), as in Choudhury et al. (with the fixed FG-ARI).
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pred = labels_at_points(labels, points)
    ident = np.broadcast_to(np.arange(points.shape[1]), pred.shape)
    fg = pred != 0
    out = {}
    for name, keep in (("full", np.ones_like(fg)), ("fg", fg)):
        a, b = ident[keep], pred[keep]
        out[f"{name}_nmi"] = float(normalized_mutual_info_score(a, b) * 100) if len(a) else 0.0
        out[f"{name}_ari"] = float(adjusted_rand_score(a, b) * 100) if len(a) else 0.0
    return out
