"""Margin statistics of a trained classifier (paper section 5.2, Tables 5-8, Fig. 3).

The paper ("From SMOTE to Mixup for Deep Imbalanced Classification") analyses models through
the margins of their logits on the evaluation set. No public code for these statistics exists,
so every choice that the text leaves open is documented in the function that makes it.

Definitions (equation numbers are the paper's):

* sample margin, eq. (11): ``gamma(x, y) = f(x)_y - max_{j != y} f(x)_j`` on the logits;
* class margin, eq. (12): the mean of ``gamma`` over the class's evaluation samples;
* majority classes (section 5.2.1): training count ``n_c > N / K``; the rest are minority;
* margin gap, eq. (17): count-weighted mean class margin of the majority classes minus the
  same for the minority classes, with the training counts ``n_c`` as weights;
* decomposition (Table 7): means of the ``gamma < 0`` and ``gamma >= 0`` samples per group;
* L2 error (Table 8): residual sum of squares of the least-squares fit, without intercept, of
  the theoretical margins ``tau_c = n_c ** (-1/4)`` (eq. 1 with ``C = 1``) by the class margins;
* Spearman rank correlation (Fig. 3) between margin gap and accuracy across trials.

Conventions shared by all functions:

* A class with no evaluation samples has a NaN class margin ("missing", not 0), and every
  function that takes class margins ignores NaN classes.
* Class-level quantities (length ``K``) are computed in float64 on the CPU: they are tiny, and
  float64 keeps the sums of thousands of margins free of visible rounding.
* ``counts`` are always the *training* class counts ``n_c``; the majority threshold ``N / K``
  is a property of the training set, so it uses all ``K`` counts even when some class is
  missing from the evaluation batch.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import torch

CountsLike = Union[Sequence[float], np.ndarray, torch.Tensor]

DECOMPOSITION_KEYS = (
    "neg_majority", "pos_majority", "neg_minority", "pos_minority",
    "frac_neg_majority", "frac_pos_majority", "frac_neg_minority", "frac_pos_minority",
)


def _as_float64_cpu(values: CountsLike, name: str) -> torch.Tensor:
    """Return ``values`` as a detached 1-D float64 CPU tensor, or raise ``ValueError``."""
    out = torch.as_tensor(np.asarray(values.detach().cpu() if torch.is_tensor(values) else values),
                          dtype=torch.float64)
    if out.dim() != 1:
        raise ValueError(f"{name}: got shape {tuple(out.shape)}; allowed: a 1-D sequence")
    return out


def _check_counts(counts: CountsLike) -> torch.Tensor:
    """Validate training counts: a non-empty 1-D sequence of finite, non-negative numbers."""
    n = _as_float64_cpu(counts, "counts")
    if n.numel() == 0:
        raise ValueError("counts: got an empty sequence; allowed: one training count per class")
    if not torch.isfinite(n).all() or (n < 0).any():
        raise ValueError(f"counts: got {n.tolist()}; allowed: finite numbers >= 0")
    return n


def _check_labels(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``targets`` as int64, refused unless every label lies in ``[0, num_classes)``."""
    targets = targets.long()
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"targets: labels must lie in [0, {num_classes})")
    return targets


def _check_same_1d_shape(margins: torch.Tensor, targets: torch.Tensor) -> None:
    if margins.shape != targets.shape or margins.dim() != 1:
        raise ValueError(f"margins/targets: got shapes {tuple(margins.shape)} and "
                         f"{tuple(targets.shape)}; allowed: equal 1-D shapes")


def _check_same_length(class_margins: torch.Tensor, counts: torch.Tensor) -> None:
    if class_margins.numel() != counts.numel():
        raise ValueError(f"class_margins/counts: got lengths {class_margins.numel()} and {counts.numel()}; "
                         "allowed: equal")


def sample_margins(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample margin ``gamma(x, y) = f(x)_y - max_{j != y} f(x)_j`` (eq. 11).

    Parameters
    ----------
    logits : torch.Tensor
        Shape ``(B, K)`` with ``K >= 2``: the raw (pre-softmax) scores ``f(x)``. The paper
        defines margins on ``f``, the network output, so no softmax is applied.
    targets : torch.Tensor
        Shape ``(B,)``, integer class labels in ``[0, K)``.

    Returns
    -------
    torch.Tensor
        Shape ``(B,)``, same dtype and device as ``logits``. Positive means correctly
        classified with room to spare; negative means misclassified. When the runner-up logit
        ties the true one, ``gamma = 0``.

    Raises
    ------
    ValueError
        If the shapes disagree, ``K < 2`` (the max over ``j != y`` would be empty), or a
        target is out of range.

    Notes
    -----
    Vectorised: the true class is masked with ``-inf`` and a single row-wise ``max`` gives the
    runner-up, so there is no loop over samples. The result is not detached; callers that only
    want statistics should run under ``torch.no_grad()`` (``margin_report`` does).
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits: got shape {tuple(logits.shape)}; allowed: (B, K) with K >= 2")
    if targets.shape != (logits.shape[0],):
        raise ValueError(f"targets: got shape {tuple(targets.shape)}; allowed: ({logits.shape[0]},)")
    targets = _check_labels(targets, logits.shape[1])
    true_logit = logits.gather(1, targets[:, None]).squeeze(1)
    is_true = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, targets[:, None], True)
    runner_up = logits.masked_fill(is_true, float("-inf")).amax(dim=1)
    return true_logit - runner_up


def class_margins(margins: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean sample margin of each class (eq. 12), NaN for classes without samples.

    Parameters
    ----------
    margins : torch.Tensor
        Shape ``(B,)``, sample margins from :func:`sample_margins`.
    targets : torch.Tensor
        Shape ``(B,)``, integer labels in ``[0, num_classes)``.
    num_classes : int
        ``K``, the length of the result.

    Returns
    -------
    torch.Tensor
        Shape ``(K,)``, float64 on the CPU. Entry ``c`` is the mean of ``gamma`` over the
        evaluation samples with label ``c``; it is NaN when there are none.

    Notes
    -----
    In eq. (12) ``n_j`` is the number of samples of class ``j`` in the set being evaluated
    (not the training count), so this is a plain per-class mean.

    A class with no samples gets NaN rather than 0: a margin of 0 is a meaningful value (a tie
    with the runner-up) and would bias every downstream statistic, whereas NaN marks the class
    as missing and is dropped by :func:`margin_gap` and :func:`theoretical_margin_l2`.

    Sums use ``index_add_`` and counts use ``bincount`` (no Python loop over samples); both
    have deterministic CUDA paths under ``torch.use_deterministic_algorithms(True)``, unlike
    ``bincount`` with weights.
    """
    _check_same_1d_shape(margins, targets)
    targets = _check_labels(targets, num_classes)
    values = margins.detach().to(torch.float64)
    sums = torch.zeros(num_classes, dtype=torch.float64, device=values.device)
    sums.index_add_(0, targets, values)
    sizes = torch.bincount(targets, minlength=num_classes).to(torch.float64)
    return (sums / sizes).cpu()  # 0 / 0 gives NaN for empty classes, which is the missing marker


def majority_mask(counts: CountsLike) -> torch.Tensor:
    """Which classes are majority classes: training count ``n_c > N / K`` (section 5.2.1).

    Parameters
    ----------
    counts : list, numpy.ndarray or torch.Tensor
        The ``K`` training class counts ``n_c``.

    Returns
    -------
    torch.Tensor
        Boolean, shape ``(K,)``, on the CPU; ``True`` for majority classes.

    Notes
    -----
    The paper: "if the class sample numbers exceed 1/K of the total training samples, we
    categorize them as majority classes". "Exceed" is read as strict ``>``, so a class exactly
    at ``N / K`` (e.g. every class of a balanced set) is minority. A balanced set therefore has
    no majority class, and the margin gap is NaN there, which is the honest answer.
    """
    n = _check_counts(counts)
    return n > n.sum() / n.numel()


def _weighted_group_mean(margins: torch.Tensor, weights: torch.Tensor, members: torch.Tensor) -> float:
    """Weighted mean of ``margins`` over ``members`` that have a margin; NaN if none weigh anything.

    The NaN is ``math.nan`` itself, so that two reports of the same run compare equal as dicts.
    """
    keep = members & ~torch.isnan(margins)
    total = weights[keep].sum()
    if total <= 0:  # no member with a margin, or only classes without training images
        return math.nan
    return float((weights[keep] * margins[keep]).sum() / total)


def _group_margins(class_margins: CountsLike, counts: CountsLike) -> tuple[float, float]:
    """The two terms of eq. (17): count-weighted mean class margin of majority and of minority."""
    m = _as_float64_cpu(class_margins, "class_margins")
    n = _check_counts(counts)
    _check_same_length(m, n)
    major = majority_mask(n)
    return _weighted_group_mean(m, n, major), _weighted_group_mean(m, n, ~major)


def margin_gap(class_margins: CountsLike, counts: CountsLike) -> float:
    """Margin gap ``gamma_gap`` (eq. 17).

    ``gamma_gap = sum_i n_i m_i / sum_i n_i - sum_j n_j m_j / sum_j n_j`` with ``i`` over majority
    and ``j`` over minority classes, ``m`` the class margins (eq. 12) and ``n`` the training
    counts.

    Parameters
    ----------
    class_margins : list, numpy.ndarray or torch.Tensor
        Shape ``(K,)``, from :func:`class_margins`; NaN marks a missing class.
    counts : list, numpy.ndarray or torch.Tensor
        Shape ``(K,)``, training class counts; they set both the weights and the majority split.

    Returns
    -------
    float
        The gap; positive when majority classes have the larger margins. NaN when either side
        has no class with a margin (e.g. a balanced set has no majority class).

    Notes
    -----
    Classes with a NaN margin are dropped from the numerator *and* the denominator of their
    side, so the gap is the one computed on the classes that were observed. A side whose
    remaining weights sum to 0 (only classes with ``n_c = 0``) is treated as empty.
    """
    major, minor = _group_margins(class_margins, counts)
    return major - minor


def _part_stats(group: torch.Tensor) -> tuple[float, float, float, float]:
    """Means of the gamma < 0 and gamma >= 0 samples of ``group`` and the share of each part."""
    negative = group < 0
    positive = ~negative  # the paper's "gamma >= 0" part, ties at 0 included
    size = group.numel()

    def share(mask: torch.Tensor) -> float:
        return int(mask.sum()) / size if size else math.nan

    def mean(values: torch.Tensor) -> float:
        return float(values.mean()) if values.numel() else math.nan  # math.nan: see _weighted_group_mean

    return mean(group[negative]), mean(group[positive]), share(negative), share(positive)


def margin_decomposition(margins: torch.Tensor, targets: torch.Tensor,
                         counts: CountsLike) -> dict[str, float]:
    """Split the sample margins into the ``gamma < 0`` and ``gamma >= 0`` parts (Table 7).

    Parameters
    ----------
    margins : torch.Tensor
        Shape ``(B,)``, sample margins from :func:`sample_margins`.
    targets : torch.Tensor
        Shape ``(B,)``, integer labels; a sample belongs to the majority group when its label is
        a majority class (:func:`majority_mask` of ``counts``).
    counts : list, numpy.ndarray or torch.Tensor
        Shape ``(K,)``, training class counts.

    Returns
    -------
    dict of str to float
        ``neg_majority``, ``pos_majority``, ``neg_minority``, ``pos_minority``: mean margin of the
        group's samples with ``gamma < 0`` (resp. ``gamma >= 0``), NaN when that part is empty.
        ``frac_neg_majority``, ``frac_pos_majority``, ``frac_neg_minority``,
        ``frac_pos_minority``: the share of the group's samples in each part (the two shares of
        a group sum to 1; both are NaN when the group has no samples).

    Notes
    -----
    The means are over *samples* pooled across the group's classes, not means of per-class
    means: the paper says "we take all gamma < 0 margins and report the average among majority
    classes and minority classes". Pooling weights each class by its number of evaluation
    samples in that part. The split follows the paper exactly, so ``gamma = 0`` (a tie with the
    runner-up) falls in the ``gamma >= 0`` part. The fractions are not in the paper; they are
    reported because a part's mean is hard to read without knowing how many samples it holds
    (the ``gamma < 0`` share is the group's error rate, up to ties).
    """
    _check_same_1d_shape(margins, targets)
    major_class = majority_mask(counts)
    targets = _check_labels(targets.detach().cpu(), major_class.numel())
    values = margins.detach().to(torch.float64).cpu()
    in_major = major_class[targets]
    out: dict[str, float] = {}
    for side, members in (("majority", in_major), ("minority", ~in_major)):
        neg, pos, frac_neg, frac_pos = _part_stats(values[members])
        out.update({f"neg_{side}": neg, f"pos_{side}": pos,
                    f"frac_neg_{side}": frac_neg, f"frac_pos_{side}": frac_pos})
    return {key: out[key] for key in DECOMPOSITION_KEYS}


def theoretical_margin_l2(class_margins: CountsLike, counts: CountsLike) -> float:
    """L2 error between the theoretical and the observed class margins (Table 8).

    Fits ``tau_c = n_c ** (-1/4)`` (eq. 1 with ``C = 1``) by ``a * m_c`` with least squares and
    no intercept, ``a = sum(m tau) / sum(m m)``, and returns the residual sum of squares
    ``sum_c (tau_c - a m_c) ** 2``.

    Parameters
    ----------
    class_margins : list, numpy.ndarray or torch.Tensor
        Shape ``(K,)``, observed class margins ``m_c`` (eq. 12); NaN marks a missing class.
    counts : list, numpy.ndarray or torch.Tensor
        Shape ``(K,)``, training class counts ``n_c``.

    Returns
    -------
    float
        The residual sum of squares; NaN when no class can take part in the fit.

    Notes
    -----
    * Direction of the fit: the paper "fit[s] theoretical margin by practical margin", so
      ``tau`` is the response and ``m`` the regressor; the free slope ``a`` absorbs the unknown
      constant ``C`` of eq. (1) ("linear regression without bias"). Setting ``C = 1`` fixes the
      scale of ``tau`` and hence of the error.
    * "L2 error" is read as the residual *sum* of squares (not its root or mean); the paper
      does not say which, and Table 8 only compares methods at fixed ``K``.
    * Classes with a NaN margin are left out. Classes with ``n_c = 0`` are left out too, since
      ``tau`` is infinite for them.
    * If every remaining margin is 0 the slope is undefined; ``a = 0`` is used, so the error
      is ``sum(tau ** 2)``.
    """
    m = _as_float64_cpu(class_margins, "class_margins")
    n = _check_counts(counts)
    _check_same_length(m, n)
    keep = ~torch.isnan(m) & (n > 0)
    if not keep.any():
        return math.nan
    m, tau = m[keep], n[keep] ** -0.25
    denom = (m * m).sum()
    slope = (m * tau).sum() / denom if denom > 0 else torch.zeros((), dtype=torch.float64)
    return float(((tau - slope * m) ** 2).sum())


def spearman(x: CountsLike, y: CountsLike) -> float:
    """Spearman's rank correlation between ``x`` and ``y`` (section 5.2.2, Fig. 3).

    Parameters
    ----------
    x, y : list, numpy.ndarray or torch.Tensor
        1-D, equal length; e.g. margin gaps and validation accuracies of several trials.

    Returns
    -------
    float
        Pearson correlation of the average ranks, in ``[-1, 1]``. NaN when there are fewer than
        2 points, either rank vector is constant, or an input holds NaN.

    Notes
    -----
    ``scipy.stats.spearmanr``: ties get the average of the ranks they span, so that the statistic
    does not depend on input order. The degenerate cases return NaN without scipy's warning.
    """
    from scipy import stats  # kept off the import path of Ray workers: only tables call this

    a = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64)
    b = np.asarray(y.detach().cpu() if torch.is_tensor(y) else y, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"x/y: got shapes {a.shape} and {b.shape}; allowed: equal 1-D shapes")
    if a.size < 2 or np.isnan(a).any() or np.isnan(b).any() or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(stats.spearmanr(a, b).statistic)


def margin_report(logits: torch.Tensor, targets: torch.Tensor, counts: CountsLike) -> dict[str, float]:
    """All margin statistics of one evaluation, as flat float metrics.

    Called by the training loop after each evaluation with the test logits it already has, so
    no second forward pass is made.

    Parameters
    ----------
    logits : torch.Tensor
        Shape ``(B, K)``, evaluation logits.
    targets : torch.Tensor
        Shape ``(B,)``, evaluation labels.
    counts : list, numpy.ndarray or torch.Tensor
        Shape ``(K,)``, the *training* class counts (weights of eq. 17, the majority split and
        ``tau`` of eq. 1).

    Returns
    -------
    dict of str to float
        ``margin_gap`` (eq. 17), ``margin_majority`` and ``margin_minority`` (its two terms),
        ``margin_l2`` (Table 8), ``margin_<k>`` for each key ``k`` of
        :func:`margin_decomposition` (Table 7), and ``class_margin_<c>`` for ``c = 0..K-1``
        (eq. 12, NaN for a class absent from the evaluation). All values are Python floats.
    """
    counts_t = _check_counts(counts)
    if logits.dim() != 2 or counts_t.numel() != logits.shape[1]:
        raise ValueError(f"counts: got {counts_t.numel()} classes for logits of shape "
                         f"{tuple(logits.shape)}; allowed: one count per logit column")
    with torch.no_grad():
        gamma = sample_margins(logits.detach(), targets)
        per_class = class_margins(gamma, targets, logits.shape[1])
    major, minor = _group_margins(per_class, counts_t)
    report = {
        "margin_gap": major - minor,
        "margin_majority": major,
        "margin_minority": minor,
        "margin_l2": theoretical_margin_l2(per_class, counts_t),
    }
    parts = margin_decomposition(gamma, targets, counts_t)
    report.update({f"margin_{k}": float(v) for k, v in parts.items()})
    report.update({f"class_margin_{c}": float(v) for c, v in enumerate(per_class.tolist())})
    return report
