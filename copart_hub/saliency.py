"""Unsupervised foreground saliency for any image: boundary connectivity over superpixels.

Zhu, Liang, Wei, Sun, "Saliency Optimization from Robust Background Detection", CVPR 2014
(the method SCOPS used to make its saliency maps, which it never released):

1. superpixels (our SLIC op on XYLab) and their mean Lab colour and position;
2. geodesic distance between superpixels on the adjacency graph (edge = Lab distance);
3. boundary connectivity ``BndCon(p) = Len_bnd(p) / sqrt(Area(p))`` -> background weight
   ``w_bg = 1 - exp(-BndCon^2 / (2 sigma_b^2))``;
4. background-weighted contrast ``wCtr`` as foreground weight;
5. saliency = argmin of ``sum w_bg s^2 + sum w_fg (s - 1)^2 + sum w_ij (s_i - s_j)^2``, a
   sparse linear system.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.csgraph import shortest_path
from skimage.color import rgb2lab

from .ops.connectivity import enforce_connectivity
from .ops.slic import differentiable_slic, position_scale, xylab_features

SIGMA_CLR = 10.0  # Lab distance scale of area / boundary length / smoothness
SIGMA_BNDCON = 1.0
SIGMA_SPA = 0.25  # spatial weight of the contrast, in units of the image diagonal-ish [0, 1]
SMOOTH_MU = 0.1  # constant added to smoothness weights


def _adjacency(labels: np.ndarray, n: int) -> sparse.csr_matrix:
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    keep = a != b
    adj = sparse.coo_matrix((np.ones(keep.sum()), (a[keep], b[keep])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    return adj


def saliency_from_superpixels(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Saliency in [0, 1] per pixel ``[H, W]`` from an RGB uint8 image and its superpixels."""
    h, w = labels.shape
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(h, w)
    n = int(labels.max()) + 1
    if n < 2:
        return np.zeros((h, w), dtype=np.float32)
    lab = rgb2lab(image).reshape(-1, 3)
    count = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    colour = np.stack([np.bincount(labels.ravel(), lab[:, c], n) for c in range(3)], 1)
    colour /= count[:, None]
    ys, xs = np.mgrid[0:h, 0:w]
    pos = (
        np.stack(
            [
                np.bincount(labels.ravel(), (ys / max(h - 1, 1)).ravel(), n),
                np.bincount(labels.ravel(), (xs / max(w - 1, 1)).ravel(), n),
            ],
            1,
        )
        / count[:, None]
    )
    border = np.zeros(n, dtype=bool)
    border[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True

    adj = _adjacency(labels, n)
    app = np.linalg.norm(colour[:, None] - colour[None], axis=-1)  # [n, n] Lab distances
    # graph of adjacent superpixels, with all boundary superpixels linked to each other
    links = adj.copy().tolil()
    idx = np.flatnonzero(border)
    links[np.ix_(idx, idx)] = 1
    links.setdiag(0)
    graph = sparse.csr_matrix(links.multiply(app + 1e-9))
    geo = shortest_path(graph, method="D", directed=False)
    sim = np.exp(-(geo**2) / (2 * SIGMA_CLR**2))
    area = sim.sum(1)
    len_bnd = sim[:, border].sum(1)
    bndcon = len_bnd / np.sqrt(area)
    w_bg = 1 - np.exp(-(bndcon**2) / (2 * SIGMA_BNDCON**2))

    spa = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    w_spa = np.exp(-(spa**2) / (2 * SIGMA_SPA**2))
    w_ctr = (app * w_spa * w_bg[None]).sum(1)
    w_fg = w_ctr / max(w_ctr.max(), 1e-9)

    smooth = sparse.csr_matrix(adj.multiply(np.exp(-(app**2) / (2 * SIGMA_CLR**2)) + SMOOTH_MU))
    laplacian = sparse.diags(np.asarray(smooth.sum(1)).ravel()) - smooth
    system = sparse.diags(w_bg + w_fg) + laplacian
    s = sparse.linalg.spsolve(system.tocsc(), w_fg)
    s = (s - s.min()) / max(s.max() - s.min(), 1e-9)
    return s[labels].astype(np.float32)


def boundary_connectivity_saliency(image: np.ndarray, n_superpixels: int = 200) -> np.ndarray:
    """Foreground saliency ``[H, W]`` in [0, 1] of an RGB uint8 image ``[H, W, 3]``."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    n = min(n_superpixels, h * w)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        feats = xylab_features(x, position_scale(h, w, n))
        assoc, _ = differentiable_slic(feats, n, n_iter=10)
    labels = enforce_connectivity(assoc.hard_labels()[0].numpy(), assoc.num_spixels)
    return saliency_from_superpixels(image, labels)
