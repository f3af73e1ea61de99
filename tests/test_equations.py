"""Golden values from ../shared/notes/reference-facts.md and properties of the paper's equations."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.data import DATASETS, Arrays, training_counts
from core.imbalance import class_counts, imbalanced_indices
from core.losses import class_balanced_weights, ldam_logits, ldam_margins, mixed_cross_entropy
from core.mixing import (LABEL_RULES, mamix_balance_point, mamix_lambda_y, mamix_remix_lambda_y, mix_batch,
                         mixup_lambda_y, remix_lambda_y, sample_beta)

CIFAR10_LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


# ----------------------------------------------------------------------------- imbalance

def test_long_tailed_counts_cifar10():
    assert class_counts(5000, 10, 100) == CIFAR10_LT100
    assert sum(class_counts(5000, 10, 100)) == 12406
    assert class_counts(5000, 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]


def test_step_and_other_datasets():
    assert sum(class_counts(5000, 10, 100, "step", 0.5)) == 25250
    assert class_counts(5000, 10, 100, "step", 0.5) == [5000] * 5 + [50] * 5
    c100 = class_counts(500, 100, 100)
    assert (c100[0], c100[-1], sum(c100)) == (500, 5, 10847)
    assert class_counts(9000, 10, 100) == [9000, 5395, 3234, 1938, 1162, 696, 417, 250, 150, 90]
    assert class_counts(7, 3, 50, "balanced") == [7, 7, 7]


def test_svhn_counts_put_digit_zero_in_the_tail():
    fake = Arrays(np.zeros((1, 1, 1, 3), np.uint8), np.zeros(20000, np.int64), np.zeros((1, 1, 1, 3), np.uint8),
                  np.zeros(1, np.int64), [str(c) for c in range(10)])
    assert training_counts(DATASETS["svhn"], fake, "long_tailed", 100, 0.5) == [10, 1000, 599, 359, 215, 129, 77,
                                                                                46, 27, 16]


def test_svhn_subset_is_drawn_in_the_reference_class_order():
    """Yang & Xu's IMBALANCESVHN (copied by imbalanced-DL) seeds numpy with the subset seed and shuffles
    the classes [1..9, 0] in turn, keeping the first n_c of each: the same images must be chosen here."""
    from core.data import imbalanced_arrays

    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat(np.arange(10), 1100))
    index = np.arange(len(labels))
    pixels = np.stack([index // 256, index % 256], 1).astype(np.uint8)[:, None, :, None]  # (N, 1, 2, 1)
    arrays = Arrays(pixels, labels, pixels[:10], labels[:10], [str(c) for c in range(10)])
    counts = training_counts(DATASETS["svhn"], arrays, "long_tailed", 100, 0.5)
    for seed in (0, 3):
        reference = np.random.RandomState(seed)
        expected = []
        for digit, n in zip([1, 2, 3, 4, 5, 6, 7, 8, 9, 0], [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]):
            idx = np.where(labels == digit)[0]
            reference.shuffle(idx)
            expected.append(idx[:n])
        x, y, used = imbalanced_arrays(arrays, DATASETS["svhn"], "long_tailed", 100, 0.5, seed)
        chosen = x[:, 0, 0, 0].astype(np.int64) * 256 + x[:, 0, 1, 0]
        np.testing.assert_array_equal(chosen, np.concatenate(expected))
        np.testing.assert_array_equal(y, labels[chosen])
        assert used == counts
    # the label-order draw of the other datasets picks other images of the same counts
    plain = imbalanced_indices(labels, counts, 0)
    assert np.bincount(labels[plain]).tolist() == counts
    assert set(plain) != set(np.concatenate(expected))


def test_class_counts_rejects_bad_input():
    with pytest.raises(ValueError, match="imbalance"):
        class_counts(10, 3, 2, "zipf")
    with pytest.raises(ValueError, match="ratio"):
        class_counts(10, 3, 0.5)


def test_imbalanced_indices_is_seeded_and_local():
    labels = np.repeat(np.arange(3), 20)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = imbalanced_indices(labels, [10, 5, 2], seed=0)
    assert np.array_equal(np.random.get_state()[1], before), "global RNG must not be touched"
    assert np.array_equal(a, imbalanced_indices(labels, [10, 5, 2], seed=0))
    assert not np.array_equal(a, imbalanced_indices(labels, [10, 5, 2], seed=1))
    assert np.bincount(labels[a]).tolist() == [10, 5, 2]


# ----------------------------------------------------------------------------- losses

def test_class_balanced_weights_golden():
    w = class_balanced_weights(CIFAR10_LT100, 0.9999)
    golden = [0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927]
    assert torch.allclose(w, torch.tensor(golden), atol=1e-4)
    assert w.sum().item() == pytest.approx(10.0, abs=1e-5)


def test_ldam_margins_golden():
    golden = [0.158, 0.180, 0.204, 0.232, 0.264, 0.300, 0.341, 0.387, 0.441, 0.5]
    assert torch.allclose(ldam_margins(CIFAR10_LT100, 0.5), torch.tensor(golden), atol=1e-3)
    # computed in float64 and rounded once (float32 powers differ in the last bit)
    n = torch.tensor(CIFAR10_LT100, dtype=torch.float64)
    assert torch.equal(ldam_margins(CIFAR10_LT100, 0.5), (0.5 * (n.min() / n) ** 0.25).float())


def test_mixed_cross_entropy_reduces_to_weighted_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 4, generator=g), torch.randint(0, 4, (16,), generator=g)
    w = torch.tensor([0.5, 1.0, 2.0, 0.5])
    ones = torch.ones(16)
    ref = torch.nn.functional.cross_entropy(logits, y, weight=w)
    assert mixed_cross_entropy(logits, y, y, ones, w, "weighted_mean").item() == pytest.approx(ref.item(), rel=1e-6)
    batch = (torch.nn.functional.cross_entropy(logits, y, weight=w, reduction="sum") / 16).item()
    assert mixed_cross_entropy(logits, y, y, ones, w, "batch_mean").item() == pytest.approx(batch, rel=1e-6)
    y2 = (y + 1) % 4
    lam = torch.rand(16, generator=g)
    mixed = (lam * torch.nn.functional.cross_entropy(logits, y, reduction="none")
             + (1 - lam) * torch.nn.functional.cross_entropy(logits, y2, reduction="none")).mean()
    assert mixed_cross_entropy(logits, y, y2, lam).item() == pytest.approx(mixed.item(), rel=1e-6)


def test_ldam_logits_subtract_the_margin_of_the_true_class_only():
    cos = torch.tensor([[0.2, 0.1], [0.2, 0.1]])
    adjusted = ldam_logits(cos, torch.tensor([0, 1]), ldam_margins([100, 10], 0.5), 30.0)
    m0 = 0.5 * (10 / 100) ** 0.25
    assert torch.allclose(adjusted, torch.tensor([[30 * (0.2 - m0), 3.0], [6.0, 30 * (0.1 - 0.5)]]), atol=1e-5)


def test_ldam_logits_build_the_scale_on_the_logits_device():
    # meta tensors have a device and no data: a scale left on the CPU meets them and raises, as beside CUDA
    meta = torch.device("meta")
    out = ldam_logits(torch.empty(2, 4, 3, device=meta), torch.zeros(2, 4, dtype=torch.int64, device=meta),
                      torch.empty(2, 3, device=meta), [30.0, 10.0])
    assert out.device == meta and out.shape == (2, 4, 3)


def test_losses_of_a_pack_are_each_members_own():
    """Leading member axis: member k's loss uses its logits, labels, lam_y, weights and LDAM margins only."""
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(3, 8, 4, generator=g), torch.randint(0, 4, (3, 8), generator=g)
    y2, lam, w = (y + 1) % 4, torch.rand(3, 8, generator=g), torch.rand(3, 4, generator=g) + 0.5
    margins, s = torch.rand(3, 4, generator=g), torch.tensor([30.0, 10.0, 1.0])
    for reduction in ("batch_mean", "weighted_mean"):
        packed = mixed_cross_entropy(logits, y, y2, lam, w, reduction)
        alone = [mixed_cross_entropy(logits[k], y[k], y2[k], lam[k], w[k], reduction) for k in range(3)]
        torch.testing.assert_close(packed, torch.stack(alone))
    packed = ldam_logits(logits, y, margins, s)
    torch.testing.assert_close(packed, torch.stack([ldam_logits(logits[k], y[k], margins[k], s[k]) for k in range(3)]))


# ----------------------------------------------------------------------------- mixing

@pytest.mark.parametrize("n_i,n_j,c_star", [(5000, 50, 0.7597), (50, 5000, 0.2403), (5000, 1077, 0.5948)])
def test_mamix_balance_point_golden(n_i, n_j, c_star):
    c = mamix_balance_point(torch.tensor(n_i), torch.tensor(n_j), omega=0.25)
    assert c.item() == pytest.approx(c_star, abs=1e-4)
    assert mamix_lambda_y(c, torch.tensor(n_i), torch.tensor(n_j), omega=0.25).item() == pytest.approx(0.5, abs=1e-6)


counts_st = st.integers(1, 5000)
lam_st = st.floats(0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(lam=lam_st, n_i=counts_st, n_j=counts_st, omega=st.floats(0.05, 8.0))
def test_mamix_lambda_y_in_unit_interval(lam, n_i, n_j, omega):
    v = mamix_lambda_y(torch.tensor(lam), torch.tensor(n_i), torch.tensor(n_j), omega=omega).item()
    assert 0.0 <= v <= 1.0


def test_mamix_endpoints_hold_when_the_balance_point_rounds_to_one_or_zero():
    # omega = 8: eta_i / eta_j = 9 ** -8 and 5000 ** -8, so c* is 1 (or 0) in float32
    lam = torch.tensor([0.0, 0.5, 1.0])
    for n_i, n_j in [(9, 1), (5000, 1), (1, 5000)]:
        got = mamix_lambda_y(lam, torch.tensor(n_i), torch.tensor(n_j), omega=8.0)
        assert got[0].item() == 0.0 and got[2].item() == 1.0, (n_i, n_j, got)
        assert 0.0 <= got[1].item() <= 1.0


@settings(max_examples=100, deadline=None)
@given(lam=lam_st, n=counts_st, omega=st.floats(0.05, 8.0))
def test_mamix_equals_mixup_for_equal_counts(lam, n, omega):
    v = mamix_lambda_y(torch.tensor(lam), torch.tensor(n), torch.tensor(n), omega=omega).item()
    assert v == pytest.approx(lam, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(a=lam_st, b=lam_st, n_i=counts_st, n_j=counts_st)
def test_mamix_monotone_in_lam_x(a, b, n_i, n_j):
    lo, hi = sorted((a, b))
    f = lambda lam: mamix_lambda_y(torch.tensor(lam), torch.tensor(n_i), torch.tensor(n_j)).item()  # noqa: E731
    assert f(lo) <= f(hi) + 1e-6


def test_mamix_favours_the_minority():
    # x_i from the majority, half the input: the label leans to the minority class j.
    v = mamix_lambda_y(torch.tensor(0.5), torch.tensor(5000), torch.tensor(50)).item()
    assert v == pytest.approx(0.5 * 0.5 / 0.7597, abs=1e-3) and v < 0.5


def test_remix_three_cases():
    lam = torch.tensor([0.3, 0.8, 0.5, 0.3, 0.8])
    n_i = torch.tensor([300, 300, 300, 10, 10])
    n_j = torch.tensor([10, 10, 300, 300, 300])
    # case 1: i is P-majority and lam_x < tau -> 0; case 2: j is P-majority and 1 - lam_x < tau -> 1
    got = remix_lambda_y(lam, n_i, n_j, tau=0.5, kappa=3.0)
    assert got.tolist() == pytest.approx([0.0, 0.8, 0.5, 0.3, 1.0])


KEEP = None  # lam_y stays the base rule's value: lam_x for Remix, MAMix's lam_y for MAMix-Remix


@pytest.mark.parametrize("lam_x, n_i, n_j, tau, kappa, expected", [
    (0.3, 30, 10, 0.5, 3.0, 0.0),     # n_i / n_j == kappa exactly: relabelled to y_j
    (0.3, 29, 10, 0.5, 3.0, KEEP),    # just below kappa
    (0.8, 10, 30, 0.5, 3.0, 1.0),     # n_i / n_j == 1 / kappa exactly: relabelled to y_i
    (0.8, 10, 29, 0.5, 3.0, KEEP),    # just above 1 / kappa
    (0.5, 300, 10, 0.5, 3.0, KEEP),   # lam_x == tau: not < tau
    (0.375, 300, 10, 0.375, 3.0, KEEP),
    (0.25, 300, 10, 0.375, 3.0, 0.0),
    (0.75, 10, 300, 0.25, 3.0, KEEP),  # 1 - lam_x == tau: not < tau
    (0.7, 10, 300, 0.25, 3.0, KEEP),  # 1 - lam_x > tau
    (0.875, 10, 300, 0.25, 3.0, 1.0),  # 1 - lam_x < tau
    (0.3, 300, 300, 0.5, 3.0, KEEP),  # equal counts with kappa > 1: no rule applies
    # The tie: kappa = 1 and n_i == n_j meet both count conditions; with tau = 0.75 both lam_x
    # conditions hold for 0.25 < lam_x < 0.75, and the reference's if/elif gives lam_y = 0.
    (0.5, 40, 40, 0.75, 1.0, 0.0),
    (0.25, 40, 40, 0.75, 1.0, 0.0),   # only the lam_y = 0 rule (1 - lam_x == tau)
    (0.75, 40, 40, 0.75, 1.0, 1.0),   # only the lam_y = 1 rule (lam_x == tau)
    (0.5, 40, 40, 0.5, 1.0, KEEP),    # tau = 0.5: at lam_x = 0.5 neither rule holds
])
def test_remix_boundaries_and_tie(lam_x, n_i, n_j, tau, kappa, expected):
    args = torch.tensor([lam_x]), torch.tensor([n_i]), torch.tensor([n_j])
    remix = remix_lambda_y(*args, tau=tau, kappa=kappa)
    combined = mamix_remix_lambda_y(*args, tau=tau, kappa=kappa)
    assert remix.dtype == torch.float32
    if expected is KEEP:
        assert torch.equal(remix, torch.tensor([lam_x]))
        assert torch.equal(combined, mamix_lambda_y(*args))
    else:
        assert remix.tolist() == combined.tolist() == [expected]


@settings(max_examples=100, deadline=None)
@given(lam=lam_st, n_i=counts_st, n_j=counts_st)
def test_all_rules_in_unit_interval(lam, n_i, n_j):
    for fn in (remix_lambda_y, mamix_remix_lambda_y):
        v = fn(torch.tensor(lam), torch.tensor(n_i), torch.tensor(n_j)).item()
        assert 0.0 <= v <= 1.0


def test_mamix_remix_applies_remix_on_top_of_mamix():
    lam, n_i, n_j = torch.tensor([0.3, 0.6]), torch.tensor([5000, 5000]), torch.tensor([50, 50])
    got = mamix_remix_lambda_y(lam, n_i, n_j)
    assert got[0].item() == 0.0  # Remix relabels
    assert got[1].item() == pytest.approx(mamix_lambda_y(lam[1], n_i[1], n_j[1]).item())


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_sample_beta_matches_the_distribution(alpha):
    from scipy import stats

    g = torch.Generator().manual_seed(0)
    draws = sample_beta(alpha, 4000, g, "cpu")
    assert draws.dtype == torch.float32 and draws.shape == (4000,)
    assert draws.min() >= 0 and draws.max() <= 1
    # Kolmogorov-Smirnov against scipy's Beta(alpha, alpha): a wrong shape parameter (e.g. 2 * alpha) or
    # a draw of G1 / G2 instead of G1 / (G1 + G2) fails by orders of magnitude.
    assert stats.kstest(draws.double().numpy(), stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_sample_beta_depends_on_the_generator_alone():
    def draws(seed):
        g = torch.Generator().manual_seed(seed)
        return sample_beta(1.0, 5, g, "cpu")

    torch.manual_seed(1)
    first = draws(0)
    torch.manual_seed(2)  # the global generator must not matter
    assert torch.equal(first, draws(0)) and not torch.equal(first, draws(1))


def test_mix_batch_mixes_inputs_with_lam_x_as_x_i_share_and_each_member_with_its_rule():
    x_i, x_j = torch.zeros(2, 4, 1, 2, 2), torch.ones(2, 4, 1, 2, 2)
    y_i, y_j = torch.tensor([[0, 0, 1, 1]] * 2), torch.tensor([[1, 1, 0, 0]] * 2)
    lam_x = torch.tensor([0.3, 0.8])
    counts = torch.tensor([5000, 50])
    rules = {"mamix": torch.tensor([[True], [False]]), "remix": torch.tensor([[False], [True]])}
    omega, tau, kappa = torch.tensor([[0.25], [4.0]]), torch.tensor([[0.5], [0.9]]), torch.tensor([[3.0], [3.0]])
    out = mix_batch(x_i, y_i, x_j, y_j, lam_x, counts=counts, rules=rules, omega=omega, tau=tau, kappa=kappa)
    assert torch.allclose(out.x[0], torch.full_like(x_i[0], 0.7)) and torch.allclose(out.x[1], torch.full_like(x_i[1], 0.2))
    n_i, n_j = torch.tensor([5000, 5000, 50, 50]), torch.tensor([50, 50, 5000, 5000])
    torch.testing.assert_close(out.lam_y[0], mamix_lambda_y(torch.tensor(0.3), n_i, n_j, omega=0.25))
    torch.testing.assert_close(out.lam_y[1], remix_lambda_y(torch.tensor(0.8), n_i, n_j, tau=0.9, kappa=3.0))


# ----------------------------------------------------------------------------- wiring: defaults, exactness

def test_library_defaults_are_the_papers_and_the_configs():
    """A formula called without its constants uses the paper's values, those TrainConfig defaults to."""
    from core.config import TrainConfig

    cfg = TrainConfig()
    assert (cfg.alpha, cfg.omega, cfg.tau, cfg.kappa, cfg.cb_beta, cfg.max_m, cfg.s, cfg.mu) == (
        1.0, 0.25, 0.5, 3.0, 0.9999, 0.5, 30.0, 0.5)
    # Remix: a 3.5-majority x_i at lam_x = 0.7 keeps lam_x (tau = 0.5), at 0.3 takes y_j (kappa = 3)
    lam, n_i, n_j = torch.tensor([0.7, 0.3]), torch.tensor([35, 35]), torch.tensor([10, 10])
    assert torch.equal(remix_lambda_y(lam, n_i, n_j), remix_lambda_y(lam, n_i, n_j, tau=0.5, kappa=3.0))
    assert remix_lambda_y(lam, n_i, n_j).tolist() == [pytest.approx(0.7), 0.0]
    # MAMix: the golden c* of omega = 0.25
    assert mamix_balance_point(torch.tensor(5000), torch.tensor(50)).item() == pytest.approx(0.7597, abs=1e-4)
    assert mamix_lambda_y(torch.tensor(0.5), torch.tensor(5000), torch.tensor(50)).item() == pytest.approx(
        0.5 * 0.5 / 0.7597, abs=1e-4)
    # MAMix-Remix at lam_x = 0.7 on pairs where tau, kappa and omega matter: the defaults are the paper's
    counts = torch.tensor([350, 100, 200])
    n_i, n_j = counts[torch.tensor([0, 1, 2])], counts[torch.tensor([1, 0, 1])]  # ratios 3.5, 1 / 3.5, 2
    lam_x = torch.tensor(0.7)
    paper = mamix_remix_lambda_y(lam_x, n_i, n_j, omega=0.25, tau=0.5, kappa=3.0)
    assert torch.equal(mamix_remix_lambda_y(lam_x, n_i, n_j), paper)
    assert paper[1] == 1.0 and 0.0 < paper[0] < paper[2] < 1.0
    # class-balanced weights, LDAM margins and scale, step imbalance's mu
    assert torch.equal(class_balanced_weights(CIFAR10_LT100), class_balanced_weights(CIFAR10_LT100, 0.9999))
    assert torch.equal(ldam_margins(CIFAR10_LT100), ldam_margins(CIFAR10_LT100, 0.5))
    cos, y = torch.tensor([[0.2, 0.1]]), torch.tensor([1])
    assert torch.equal(ldam_logits(cos, y, ldam_margins([100, 10]), 30.0), torch.tensor([[6.0, 30 * (0.1 - 0.5)]]))
    assert class_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5


def test_remix_ratio_at_a_decimal_kappa_and_in_float64():
    one = torch.tensor([0.3])
    # 11 / 10 == 1.1 exactly as decimals: relabelled (a product 1.1 * 10 = 11.000000000000002 would miss it)
    assert remix_lambda_y(one, torch.tensor([11]), torch.tensor([10]), kappa=1.1).tolist() == [0.0]
    assert remix_lambda_y(torch.tensor([0.7]), torch.tensor([10]), torch.tensor([11]), kappa=1.1).tolist() == [1.0]
    # (3e7 - 1) / 1e7 is below 3, but rounds to 3.0 in float32
    big, small = torch.tensor([30_000_000 - 1]), torch.tensor([10_000_000])
    assert remix_lambda_y(one, big, small).tolist() == pytest.approx([0.3])
    assert remix_lambda_y(torch.tensor([0.7]), small, big).tolist() == pytest.approx([0.7])


def test_mamix_uses_its_omega():
    # omega = 1: eta = 1 / n, c* = (1/50) / (1/5000 + 1/50) = 100 / 101
    lam, n_i, n_j = torch.tensor(0.5), torch.tensor(5000), torch.tensor(50)
    expected = 0.5 * 0.5 / (100 / 101)
    assert mamix_lambda_y(lam, n_i, n_j, omega=1.0).item() == pytest.approx(expected, rel=1e-6)
    assert mamix_remix_lambda_y(lam, n_i, n_j, omega=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_mamix_equals_mixup_for_equal_counts_at_any_omega():
    # 5000 ** -16 underflows to 0 in float32 (0 / 0 = NaN); float64 keeps it
    lam = torch.tensor([0.0, 0.3, 1.0])
    n = torch.tensor([5000, 5000, 5000])
    assert mamix_balance_point(n, n, omega=16.0).tolist() == [0.5] * 3
    assert torch.equal(mamix_lambda_y(lam, n, n, omega=16.0), lam)
    # unequal counts at omega = 16 keep both ends
    assert mamix_lambda_y(lam, torch.tensor(1), torch.tensor(5000), omega=16.0)[[0, 2]].tolist() == [0.0, 1.0]


def test_label_rules_broadcast_a_batch_lam_x_over_per_sample_counts_and_back():
    counts = torch.tensor([5, 7, 9, 11])
    assert LABEL_RULES["mixup"] is mixup_lambda_y
    for name, rule in LABEL_RULES.items():
        per_sample = rule(torch.tensor(0.3, dtype=torch.float64), counts, counts.flip(0))
        assert per_sample.shape == (4,) and per_sample.dtype == torch.float32, name
        per_lam = rule(torch.rand(4, dtype=torch.float64), torch.tensor(5), torch.tensor(5))
        assert per_lam.shape == (4,) and per_lam.dtype == torch.float32, name


def test_imbalance_profile_boundaries():
    assert class_counts(100, 4, 1) == [100] * 4  # ratio 1 is balanced, and allowed
    assert class_counts(100, 2, 10) == [100, 10]  # two classes: head and tail only
    assert class_counts(7, 1, 10) == [7]  # one class: no division by K - 1 = 0
    assert class_counts(100, 4, 10, "step", 0.25) == [100, 100, 100, 10]  # mu is used
    labels = np.repeat(np.arange(3), 20)
    taken = imbalanced_indices(labels, [20, 5, 0], seed=0)  # a class taken whole, one not at all
    assert np.bincount(labels[taken], minlength=3).tolist() == [20, 5, 0]
    with pytest.raises(ValueError, match="counts: class 1 needs 21 samples but the data has 20"):
        imbalanced_indices(labels, [1, 21, 1], seed=0)
    empty = imbalanced_indices(labels, [], seed=0)
    assert empty.dtype == np.int64 and empty.shape == (0,)


# ----------------------------------------------------------------------------- wiring: losses

def test_mixed_cross_entropy_weighs_each_term_by_its_own_label():
    """The weighted mixed loss, computed independently: lam_y * w[y_i] * CE_i + (1 - lam_y) * w[y_j] * CE_j,
    over the batch size (batch_mean, the authors' DRW trainers) or over the summed weights
    sum(lam_y w[y_i] + (1 - lam_y) w[y_j]) (weighted_mean)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, 5, generator=g)
    y_i, y_j = torch.randint(0, 5, (12,), generator=g), torch.randint(0, 5, (12,), generator=g)
    lam = torch.rand(12, generator=g)
    w = torch.tensor([0.2, 0.5, 1.0, 2.0, 4.0])
    ce = torch.nn.CrossEntropyLoss(weight=w, reduction="none")  # w[y] * CE, as imbalanced-DL
    terms = lam * ce(logits, y_i) + (1 - lam) * ce(logits, y_j)
    assert mixed_cross_entropy(logits, y_i, y_j, lam, w, "batch_mean").item() == pytest.approx(
        terms.mean().item(), rel=1e-6)
    normaliser = (lam * w[y_i] + (1 - lam) * w[y_j]).sum()
    assert mixed_cross_entropy(logits, y_i, y_j, lam, w, "weighted_mean").item() == pytest.approx(
        (terms.sum() / normaliser).item(), rel=1e-6)
    for weights in (w, None):
        with pytest.raises(ValueError, match=r"reduction: got 'sum'; allowed: \['batch_mean', 'weighted_mean'\]"):
            mixed_cross_entropy(logits, y_i, y_j, lam, weights, "sum")


@pytest.mark.parametrize("reduction", ["weighted_mean", "batch_mean"])
def test_ldam_loss_is_weighted_cross_entropy_on_margin_adjusted_scaled_logits(reduction):
    counts = [400, 100, 25]
    g = torch.Generator().manual_seed(2)
    cos = torch.rand(9, 3, generator=g) * 2 - 1
    y = torch.tensor([0, 1, 2] * 3)
    w = torch.tensor([0.5, 1.0, 2.0])  # sum over the batch 10.5, not the batch size 9
    margins = 0.3 * torch.tensor([400.0, 100.0, 25.0]) ** -0.25 / 25 ** -0.25  # max_m = 0.3 on the tail
    adjusted = 20.0 * (cos - torch.nn.functional.one_hot(y, 3) * margins[y][:, None])
    torch.testing.assert_close(ldam_margins(counts, 0.3), margins.float())
    logits = ldam_logits(cos, y, ldam_margins(counts, 0.3), 20.0)
    torch.testing.assert_close(logits, adjusted.float())
    ones = torch.ones(len(y))
    per_sample = torch.nn.functional.cross_entropy(adjusted, y, weight=w, reduction="none")
    expected = per_sample.sum() / (w[y].sum() if reduction == "weighted_mean" else len(y))
    assert mixed_cross_entropy(logits, y, y, ones, w, reduction).item() == pytest.approx(expected.item(), rel=1e-6)
    assert mixed_cross_entropy(logits, y, y, ones).item() == pytest.approx(
        torch.nn.functional.cross_entropy(adjusted, y).item(), rel=1e-6)
    weighted_mean = torch.nn.functional.cross_entropy(adjusted, y, weight=w)  # LDAM-DRW's default reduction
    assert mixed_cross_entropy(logits, y, y, ones, w, "weighted_mean").item() == pytest.approx(
        weighted_mean.item(), rel=1e-6)
    # bf16 cosine logits (autocast) are adjusted in float32
    bf16 = ldam_logits(cos.bfloat16(), y, ldam_margins(counts, 0.3), 20.0)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, ldam_logits(cos.bfloat16().float(), y, ldam_margins(counts, 0.3), 20.0))


def test_class_weights_switch_on_at_their_epoch():
    from core.schedule import ClassWeights

    counts = [5000, 500, 50]
    weights = class_balanced_weights(counts, 0.999)
    never, cb, drw = (ClassWeights(kind, counts, 0.999, drw_epoch=3) for kind in ("none", "cb", "drw"))
    assert [never.at(e, "cpu") for e in (0, 3, 9)] == [None, None, None]
    assert all(torch.equal(cb.at(e, "cpu"), weights) for e in (0, 1, 9))
    assert drw.at(0, "cpu") is None and drw.at(2, "cpu") is None
    assert torch.equal(drw.at(3, "cpu"), weights) and torch.equal(drw.at(9, "cpu"), weights)
    assert drw.at(3, "meta").device.type == "meta"  # moved to the device asked for


def test_class_balanced_weights_in_float64_before_rounding():
    """(1 - beta) / (1 - beta ** n_c), rescaled to sum to K, computed in float64 (beta in float32 would
    shift the weights by 4e-5 relative); matches numpy to float32 rounding."""
    beta = 0.9999
    n = np.array(CIFAR10_LT100, dtype=np.float64)
    w = (1 - beta) / (1 - beta ** n)
    w = w / w.sum() * len(n)
    np.testing.assert_allclose(class_balanced_weights(CIFAR10_LT100, beta).numpy(), w, rtol=2e-7)


# ----------------------------------------------------------------------------- wiring: mixing a batch

@pytest.mark.parametrize("rule", ["mixup", "remix", "mamix", "mamix_remix"])
def test_mix_batch_passes_every_hyperparameter_to_the_label_rule(rule):
    lam_x = torch.tensor([0.67])  # between Remix's default tau and the 0.8 used here
    counts = torch.tensor([500, 100, 40, 10])
    y_i, y_j = torch.tensor([[0, 3, 1, 2, 0, 3]]), torch.tensor([[3, 0, 2, 1, 1, 2]])
    x_i, x_j = torch.rand(1, 6, 1, 2, 2, dtype=torch.float64), torch.rand(1, 6, 1, 2, 2, dtype=torch.float64)
    hyper = dict(omega=0.7, tau=0.8, kappa=2.0)
    out = mix_batch(x_i, y_i, x_j, y_j, lam_x, counts=counts, rules={rule: torch.tensor([[True]])},
                    **{k: torch.tensor([[v]], dtype=torch.float64) for k, v in hyper.items()})
    assert out.y_i is y_i and out.y_j is y_j
    expected = LABEL_RULES[rule](lam_x[0], counts[y_i[0]], counts[y_j[0]], **hyper)
    assert torch.equal(out.lam_y[0], expected)
    assert out.x.dtype == torch.float64
    torch.testing.assert_close(out.x, 0.67 * x_i + (1 - 0.67) * x_j)
    if "remix" in rule:  # (0 -> 3) is a 50-majority pair: relabelled under tau = 0.8, not under 0.5
        assert out.lam_y[0, 0] == 0.0


def test_loss_defaults_and_pack_shapes_without_weights():
    g = torch.Generator().manual_seed(4)
    logits, y = torch.randn(2, 6, 3, generator=g), torch.randint(0, 3, (2, 6), generator=g)
    y2, lam, w = (y + 1) % 3, torch.rand(2, 6, generator=g), torch.tensor([0.5, 1.0, 2.0])
    # the default reduction is the batch mean (Algorithm 1's 1/M)
    torch.testing.assert_close(mixed_cross_entropy(logits[0], y[0], y2[0], lam[0], w),
                               mixed_cross_entropy(logits[0], y[0], y2[0], lam[0], w, "batch_mean"))
    # unweighted, a pack keeps one loss per member
    packed = mixed_cross_entropy(logits, y, y2, lam)
    assert packed.shape == (2,)
    torch.testing.assert_close(packed, torch.stack([mixed_cross_entropy(logits[k], y[k], y2[k], lam[k]) for k in range(2)]))
    # LDAM's scale of any dtype gives float32 logits
    out = ldam_logits(torch.rand(2, 6, 3, generator=g), y, ldam_margins([9, 3, 1]).expand(2, 3),
                      torch.tensor([30.0, 10.0], dtype=torch.float64))
    assert out.dtype == torch.float32


def test_mix_batch_returns_the_lam_x_it_mixed_with():
    x = torch.zeros(1, 2, 1, 1, 1)
    y = torch.tensor([[0, 1]])
    lam_x = torch.tensor([0.25])
    out = mix_batch(x, y, x, y, lam_x, counts=torch.tensor([4, 2]), rules={"mixup": torch.tensor([[True]])},
                    omega=torch.ones(1, 1), tau=torch.ones(1, 1), kappa=torch.ones(1, 1))
    assert out.lam_x is lam_x and out.lam_y.tolist() == [[0.25, 0.25]]
