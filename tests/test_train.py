"""The training function: every method runs, learns, and is deterministic under a seed."""

import math
import shutil
import traceback

import numpy as np
import pytest
import torch

from conftest import tiny_config, with_stages
from core.config import ConfigError
from core.methods import METHODS
from core.config import TrainConfig
from core.evaluation import eval_logits
from core.models import create_model
from core.margins import margin_report
from core.mixing import remix_lambda_y
from core.schedule import learning_rate
from core.train import (compiles, draw_epoch, epoch_weights, evaluate, main, make_batch, member_losses,
                        run_epoch, set_up, train, train_pack, train_step)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_two_epochs_on_digits(method, stage_checkpoints):
    reports = []
    metrics = train(with_stages(tiny_config(method=method), stage_checkpoints), reports.append)
    assert [r["epoch"] for r in reports] == [1, 2]
    for key in ("train_loss", "test_acc", "test_balanced_acc", "test_acc_best", "margin_gap", "class_acc_9"):
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert metrics["test_acc_best"] == max(r["test_acc"] for r in reports)


def test_a_short_run_is_well_above_chance():
    metrics = train(dict(dataset="digits", method="mixup_drw", epochs=12, milestones=[8, 10], drw_epoch=8,
                         warmup_epochs=1, device="cpu"))
    # chance is 0.1. The authors' head (nn.Linear's small initial draw) learns slower on a schedule this
    # short than a Kaiming-drawn one (docs/results/linear-head/), hence a bound well below what either reaches.
    assert metrics["test_acc"] > 0.3


def test_same_seed_same_numbers_other_seed_other_numbers():
    a = train(tiny_config(method="mamix_drw", seed=3))
    b = train(tiny_config(method="mamix_drw", seed=3))
    c = train(tiny_config(method="mamix_drw", seed=4))
    assert a == b
    assert a["train_loss"] != c["train_loss"]


def test_resume_from_a_saved_state_continues_the_same_run():
    states = []
    full = train(tiny_config(method="remix_drw", epochs=3, milestones=[2], drw_epoch=2), save_state=states.append)
    resumed = train(tiny_config(method="remix_drw", epochs=3, milestones=[2], drw_epoch=2), resume=states[0])
    assert resumed == full
    # the best epoch so far comes from the state too, not only from the epochs trained after it
    states[0]["best"][0]["test_acc_best"] = 1.0
    again = train(tiny_config(method="remix_drw", epochs=3, milestones=[2], drw_epoch=2), resume=states[0])
    assert again["test_acc_best"] == 1.0 and full["test_acc_best"] < 1.0


def test_each_epoch_trains_at_its_learning_rate_from_the_schedule(monkeypatch):
    """The optimiser's learning rate while an epoch trains is the schedule's for that epoch (warm-up,
    then each milestone's decay), not only the value logged."""
    import core.train

    seen, original = [], core.train.train_epoch

    def spy(pack, *args):
        seen.append([group["lr"] for group in pack.optimizer.param_groups])
        return original(pack, *args)

    monkeypatch.setattr(core.train, "train_epoch", spy)
    cfg = tiny_config(epochs=4, warmup_epochs=2, milestones=[3], drw_epoch=3)
    train(cfg)
    expected = [learning_rate(TrainConfig.from_dict(cfg), epoch) for epoch in range(4)]
    assert len(set(expected)) == 3 and seen == [[lr] * len(seen[0]) for lr in expected]


@pytest.mark.parametrize("method, head", [("ldam_drw", "GroupedNormedLinear"), ("ldam", "GroupedNormedLinear"),
                                          ("drw", "GroupedLinear")])
def test_ldam_uses_a_cosine_head_the_others_a_linear_one_and_margins_are_finite(method, head):
    pack = set_up([TrainConfig.from_dict(tiny_config(method=method))])
    assert type(pack.net.grouped.head).__name__ == head
    if head == "GroupedNormedLinear":  # cosines: bounded whatever the inputs' scale
        x = 10 * pack.data.eval_inputs("test", slice(0, 64))
        with torch.no_grad():
            assert pack.net.forward_shared(x).abs().max() <= 1 + 1e-5
    assert math.isfinite(train(tiny_config(method=method))["margin_l2"])


def test_bad_config_fails_before_training():
    with pytest.raises(ConfigError, match="method"):
        train(tiny_config(method="mixup_remix"))


def test_command_line_runs_and_prints_per_class_accuracy(caplog):
    caplog.set_level("INFO")
    metrics = main(["--method", "mamix_drw", "--omega", "0.5", "--epochs", "2", "--warmup-epochs", "1",
                    "--milestones", "1", "--drw-epoch", "1", "--device", "cpu"])
    assert "per-class test accuracy" in caplog.text
    assert all(f"{c}: {metrics[f'class_acc_{c}']:.3f}" in caplog.text for c in range(10))
    assert metrics["epoch"] == 2


@pytest.mark.parametrize("method", ["mamix_drw", "m2m"])
def test_no_host_sync_inside_the_training_step(monkeypatch, method, stage_checkpoints):
    """No tensor is read back to the host (.item(), .tolist(), .cpu(), .numpy(), bool/float/int of a
    tensor) anywhere below ``train_epoch``: the steps run without host syncs; the evaluation reads once.
    Nor does a step make a tensor from host data (``torch.tensor``): on a GPU, a copy the host waits for."""
    in_steps, anywhere, made_in_steps = [], [], []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _name=name, _original=original, **k):
            anywhere.append(_name)
            if any(frame.name == "train_epoch" for frame in traceback.extract_stack()):
                in_steps.append(_name)
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)

    def tensor_spy(*a, _original=torch.tensor, **k):
        if any(frame.name in ("make_batch", "train_step") for frame in traceback.extract_stack()):
            made_in_steps.append(a)
        return _original(*a, **k)
    monkeypatch.setattr(torch, "tensor", tensor_spy)

    train(with_stages(tiny_config(method=method, epochs=2, milestones=[1], drw_epoch=1, m2m_steps=2),
                      stage_checkpoints))
    assert anywhere, "the spy must see the evaluation's reads"
    assert in_steps == []
    assert made_in_steps == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.set_sync_debug_mode "
                                                           "watches CUDA synchronisations only")
@pytest.mark.parametrize("method", ["erm", "mamix_remix_drw", "neighbor_mix_drw"])
def test_no_cuda_sync_inside_the_training_step(method):
    """On a GPU, CUDA itself reports any synchronising call of an epoch (the second one: the first
    initialises cuDNN and the allocator)."""
    run = set_up([TrainConfig.from_dict(tiny_config(method=method, device="cuda"))])
    run_epoch(run, 1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = run_epoch(run, 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler")
def test_compiled_model_trains_like_the_eager_one():
    """compile=True runs through training and evaluation (on the CPU the CUDA-graph mode compiles
    without graphs) and ends near the eager model: compiled kernels round differently, not more."""
    config = tiny_config(method="mamix_drw")
    eager = train(config)
    compiled_config = {**config, "compile": True, "compile_mode": "reduce-overhead"}
    kinds = [type(set_up([TrainConfig.from_dict(c)]).forward).__name__ for c in (config, compiled_config)]
    assert kinds[0] != "OptimizedModule" and kinds[1] == "OptimizedModule"
    compiled = train(compiled_config)
    assert compiled["epoch"] == eager["epoch"] == 2
    assert compiled["test_acc"] == pytest.approx(eager["test_acc"], abs=0.05)


@pytest.mark.parametrize("compile_,device,expected", [(None, "cuda", True), (None, "cpu", False),
                                                      (False, "cuda", False), (True, "cpu", True)])
def test_the_step_is_compiled_by_default_on_cuda_only(compile_, device, expected):
    assert compiles(TrainConfig.from_dict({"compile": compile_}), torch.device(device)) is expected


def test_a_default_cpu_pack_runs_eager():
    pack = set_up([TrainConfig.from_dict(tiny_config(method="mamix_drw"))])
    assert TrainConfig().compile is None and TrainConfig().compile_mode == "reduce-overhead"
    assert not pack.compiled and pack.forward is pack.net


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_default_cuda_pack_is_compiled_with_cuda_graphs():
    pack = set_up([TrainConfig.from_dict({**tiny_config(method="mamix_drw"), "device": "cuda"})])
    assert pack.compiled and type(pack.forward).__name__ == "OptimizedModule"


# ----------------------------------------------------------------------------- the authors' loss reduction

@pytest.mark.parametrize("method", ["drw", "cb", "mixup_drw", "remix_drw", "mamix_drw", "smote_mix_drw",
                                    "neighbor_mix_drw"])
def test_reduction_defaults_to_the_batch_mean_except_for_ldam(method):
    assert TrainConfig.from_dict({"method": method}).reduction == "batch_mean"
    assert TrainConfig.from_dict({"method": "ldam_drw"}).reduction == "weighted_mean"
    assert TrainConfig.from_dict({"method": method, "reduction": "weighted_mean"}).reduction == "weighted_mean"


def independent_cb_weights(counts, beta):
    """Cui et al.'s weights computed here from the formula, not by core.losses."""
    n = torch.tensor(counts, dtype=torch.float64)
    w = (1 - beta) / (1 - beta ** n)
    return (w / w.sum() * len(counts)).float()


def independent_ldam_logits(logits, y, counts, max_m, s):
    """Cao et al.'s LDAM logits computed here from eq. 1, not by core.losses: s * (z - m_y onehot(y)),
    m_c = max_m (n_min / n_c) ** (1/4)."""
    n = torch.tensor(counts, dtype=torch.float64)
    margins = (max_m * (n.min() / n) ** 0.25).float()
    return s * (logits.float() - torch.nn.functional.one_hot(y, len(n)) * margins[y][:, None])


@pytest.mark.parametrize("method", ["drw", "mamix_drw", "ldam_drw"])
def test_loss_after_the_drw_switch_is_the_authors(method):
    """On a batch after the DRW switch: drw and mamix_drw divide the weighted loss by the batch size
    (imbalanced-DL's ``CrossEntropyLoss(weight=w, reduction='none')(...).mean()``, each term of a mixed
    label weighted by its own class), ldam_drw by the summed weights (``F.cross_entropy(weight=w)``)."""
    cfg = TrainConfig.from_dict(tiny_config(method=method))
    pack = set_up([cfg])
    batch = make_batch(pack, draw_epoch(pack), 0, 0, cfg.batch_size)
    logits = pack.forward(batch.x)
    loss = member_losses(pack, logits, batch, epoch_weights(pack, cfg.drw_epoch))[0]

    w = independent_cb_weights(pack.data.counts, cfg.cb_beta)
    z, y_i, y_j, lam = logits[0].float(), batch.y_i[0], batch.y_j[0], batch.lam_y[0]
    if method == "ldam_drw":
        z = independent_ldam_logits(z, y_i, pack.data.counts, cfg.max_m, cfg.s)
        expected = torch.nn.functional.cross_entropy(z, y_i, weight=w)
        other = torch.nn.functional.cross_entropy(z, y_i, weight=w, reduction="sum") / len(y_i)
    else:
        ce = torch.nn.CrossEntropyLoss(weight=w, reduction="none")
        expected = (lam * ce(z, y_i) + (1 - lam) * ce(z, y_j)).mean()
        other = (lam * ce(z, y_i) + (1 - lam) * ce(z, y_j)).sum() / (lam * w[y_i] + (1 - lam) * w[y_j]).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(expected.item() - other.item()) > 1e-3 * abs(expected.item()), "the reduction must matter here"
    if method == "mamix_drw":
        assert (y_i != y_j).any() and ((lam > 0) & (lam < 1)).any(), "both terms of the mixed label must count"


def test_each_ldam_member_trains_with_its_own_scale_and_largest_margin():
    """s and max_m are member fields: in one pack, each LDAM member's loss uses its own (eq. 1 margins
    max_m * (n_min / n_c) ** 0.25, logits scaled by s), as if trained alone."""
    cfgs = [TrainConfig.from_dict(tiny_config(method="ldam_drw", s=s, max_m=max_m))
            for s, max_m in ((30.0, 0.5), (10.0, 0.3))]
    pack = set_up(cfgs)
    batch = make_batch(pack, draw_epoch(pack), 0, 0, cfgs[0].batch_size)
    logits = pack.forward(batch.x)
    losses = member_losses(pack, logits, batch, epoch_weights(pack, cfgs[0].drw_epoch))
    for k, cfg in enumerate(cfgs):
        y = batch.y_i[k]
        z = independent_ldam_logits(logits[k], y, pack.data.counts, cfg.max_m, cfg.s)
        w = independent_cb_weights(pack.data.counts, cfg.cb_beta)
        assert losses[k].item() == pytest.approx(torch.nn.functional.cross_entropy(z, y, weight=w).item(), rel=1e-5)


def test_each_member_mixes_with_its_own_alpha_tau_and_kappa():
    """alpha, tau and kappa are member fields: one Remix-DRW member draws lam_x from Beta(0.2, 0.2) (piled
    at 0 and 1) and relabels with tau 0.5, P = 3; the other from Beta(50, 50) (near 1/2), tau 0.9, P = 1.5."""
    cfgs = [TrainConfig.from_dict(tiny_config(method="remix_drw", alpha=alpha, tau=tau, kappa=kappa))
            for alpha, tau, kappa in ((0.2, 0.5, 3.0), (50.0, 0.9, 1.5))]
    pack = set_up(cfgs)
    draws = draw_epoch(pack)
    spread = (draws.lam_x - 0.5).abs().mean(dim=1)
    assert spread[0] > 0.25 > 0.1 > spread[1]
    counts = torch.tensor(pack.data.counts)
    for step in range(3):
        batch = make_batch(pack, draws, step, 64 * step, 64 * (step + 1))
        n_i, n_j = counts[batch.y_i], counts[batch.y_j]
        own = [remix_lambda_y(batch.lam_x[k], n_i[k], n_j[k], tau=c.tau, kappa=c.kappa) for k, c in enumerate(cfgs)]
        torch.testing.assert_close(batch.lam_y, torch.stack(own))
    other = remix_lambda_y(batch.lam_x[1], n_i[1], n_j[1], tau=cfgs[0].tau, kappa=cfgs[0].kappa)
    assert not torch.equal(batch.lam_y[1], other), "tau and kappa must matter in this batch"


def test_class_weights_switch_on_at_each_members_drw_epoch():
    """DRW members re-weight from their own DRW epoch on, cb from epoch 0, erm never."""
    cfgs = [TrainConfig.from_dict(tiny_config(epochs=3, milestones=[2], **m)) for m in
            (dict(method="drw", drw_epoch=1), dict(method="drw", drw_epoch=2, cb_beta=0.99), dict(method="cb"),
             dict(method="erm"))]
    pack = set_up(cfgs)
    ones = torch.ones(10)
    cb = [independent_cb_weights(pack.data.counts, c.cb_beta) for c in cfgs]
    expected = {0: [ones, ones, cb[2], ones], 1: [cb[0], ones, cb[2], ones], 2: [cb[0], cb[1], cb[2], ones]}
    for epoch, rows in expected.items():
        torch.testing.assert_close(epoch_weights(pack, epoch), torch.stack(rows), rtol=1e-6, atol=0)


def test_evaluation_runs_in_eval_mode_and_leaves_the_model_as_it_found_it():
    cfg = TrainConfig.from_dict(tiny_config(method="mixup_drw"))
    pack = set_up([cfg])
    run_epoch(pack, 0)
    before = pack.net.member_state(0)
    logits = eval_logits(pack.net, pack.data, "test", 2 * cfg.batch_size)[0]
    assert pack.net.training
    assert all(torch.equal(v, before[k]) for k, v in pack.net.member_state(0).items()), "BatchNorm statistics moved"
    model = create_model(cfg.model, 10, 1)
    model.load_state_dict(before)
    x = pack.data.eval_inputs("test", slice(None))
    torch.testing.assert_close(logits, model.eval()(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits, model.train()(x), atol=1e-3), "train-mode logits must differ, or this proves nothing"


def test_a_pack_trained_in_bf16_is_evaluated_in_fp32():
    """amp rounds the training steps only: the reported margins are those of the member's fp32 forward
    pass, which bf16 logits (rounded to a grid that ties close classes) would not give."""
    cfg = TrainConfig.from_dict(tiny_config(method="mixup_drw", amp=True))
    pack = set_up([cfg])
    run_epoch(pack, 0)
    model = create_model(cfg.model, 10, 1)
    model.load_state_dict(pack.net.member_state(0))
    model.eval()
    x, y = pack.data.eval_inputs("test", slice(None)), pack.data.y_test
    with torch.no_grad():
        expected = margin_report(model(x), y, pack.data.counts)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = margin_report(model(x).float(), y, pack.data.counts)
    reported = evaluate(pack, [0])[0]
    assert {k: reported[k] for k in expected} == pytest.approx(expected, rel=1e-5, abs=1e-6, nan_ok=True)
    assert rounded != pytest.approx(expected, rel=1e-5, abs=1e-6, nan_ok=True), \
        "bf16 must change the margins, or this proves nothing"


# ----------------------------------------------------------------------------- the authors' clean forward

def test_clean_forward_moves_batchnorm_statistics_and_nothing_else():
    """With ``clean_forward`` (the authors' extra forward of the clean batch) the weights train exactly as
    without it and only BatchNorm's running statistics, and so the evaluations, differ."""
    states = {}
    for on in (False, True):
        cfg = tiny_config(method="mamix_drw", clean_forward=on)
        train_pack([cfg], save_state=lambda state, on=on: states.__setitem__(on, state))
    off, on = states[False], states[True]
    running = [k for k in off["net"] if "running_" in k]
    assert running and all(not torch.equal(off["net"][k], on["net"][k]) for k in running)
    assert all(torch.equal(off["net"][k], on["net"][k]) for k in off["net"] if k not in running
               and "num_batches_tracked" not in k), "a weight changed"
    assert off["metrics"][0]["test_acc"] != on["metrics"][0]["test_acc"] or \
        off["metrics"][0]["margin_gap"] != on["metrics"][0]["margin_gap"]


def test_clean_forward_puts_the_clean_batch_into_the_first_batchnorm_mean():
    """After one step from zero running means: without the clean forward the first BatchNorm's running
    mean is 0.1 mu (momentum 0.1, mu the batch mean of the first convolution's output); the clean forward
    first gives 0.9 * 0.1 mu + 0.1 mu = 0.19 mu. Mixing a batch with a permutation of itself keeps that
    linear layer's batch mean, so mu is the same for the clean and the mixed batch."""
    means = {}
    for on in (False, True):
        pack = set_up([TrainConfig.from_dict(tiny_config(method="mixup", clean_forward=on))])
        batch = make_batch(pack, draw_epoch(pack), 0, 0, pack.cfg.batch_size)
        assert not torch.equal(batch.x, batch.x_i)
        train_step(pack, batch, epoch_weights(pack, 0))
        state = pack.net.member_state(0)
        means[on] = state[next(k for k in state if k.endswith("running_mean"))]
    torch.testing.assert_close(means[True], 1.9 * means[False], rtol=1e-4, atol=1e-6)
    assert means[False].abs().max() > 1e-3


@pytest.mark.parametrize("value, message", [(True, "false for 'erm'"), ("yes", "true or false")])
def test_clean_forward_is_refused_where_it_means_nothing(value, message):
    with pytest.raises(ConfigError, match=f"clean_forward: .*{message}"):
        TrainConfig.from_dict(tiny_config(method="erm", clean_forward=value))


# ----------------------------------------------------------------------------- the validation split

def test_validation_split_is_a_disjoint_balanced_seeded_part_of_each_class():
    from core.data import validation_split

    labels = np.repeat(np.arange(4), 25)
    val, test = validation_split(labels, 5, seed=3)
    assert len(np.intersect1d(val, test)) == 0 and sorted(np.r_[val, test]) == list(range(100))
    assert np.bincount(labels[val]).tolist() == [5] * 4 and np.bincount(labels[test]).tolist() == [20] * 4
    again, _ = validation_split(labels, 5, seed=3)
    other, _ = validation_split(labels, 5, seed=4)
    assert np.array_equal(val, again) and not np.array_equal(val, other)
    fraction, _ = validation_split(labels, 0.2, seed=3)
    assert np.array_equal(fraction, val)
    with pytest.raises(ValueError, match="^val_split: 25 takes 25 of the 25"):
        validation_split(labels, 25, seed=0)


def test_every_trial_of_a_sweep_sees_the_same_split_whatever_its_seed():
    packs = [set_up([TrainConfig.from_dict(tiny_config(val_split=10, seed=s))]) for s in (0, 1)]
    assert torch.equal(packs[0].data.x_val, packs[1].data.x_val)
    assert torch.equal(packs[0].data.x_test, packs[1].data.x_test)
    assert len(packs[0].data.y_val) == 100 and len(packs[0].data.y_test) == 400  # digits: 50 test images per class
    assert torch.bincount(packs[0].data.y_val).tolist() == [10] * 10


def test_with_a_split_the_best_epoch_is_selected_on_validation():
    reports = []
    train(tiny_config(method="mixup_drw", epochs=4, milestones=[3], drw_epoch=3, val_split=10), reports.append)
    for key in ("val_acc", "val_balanced_acc", "val_margin_gap", "val_acc_best", "test_acc_at_val_best"):
        assert math.isfinite(reports[-1][key]), key
    assert "val_class_acc_0" not in reports[-1]
    chosen = max(range(len(reports)), key=lambda e: (reports[e]["val_acc"], -e))  # first epoch of the best
    assert reports[-1]["val_acc_best"] == reports[chosen]["val_acc"]
    assert reports[-1]["test_acc_at_val_best"] == reports[chosen]["test_acc"]
    assert reports[-1]["test_acc_best"] == max(r["test_acc"] for r in reports)


def test_without_a_split_no_validation_metric_is_reported():
    metrics = train(tiny_config())
    assert not [k for k in metrics if k.startswith("val_") or "val_best" in k]


@pytest.mark.parametrize("value", [0, -1, 1.0, 1.5, "half", True])
def test_bad_validation_split_is_refused(value):
    with pytest.raises(ConfigError, match="^val_split: "):
        TrainConfig.from_dict(tiny_config(val_split=value))


def test_validation_split_flag_takes_a_count_a_fraction_or_none():
    from core.train import _parser

    for text, value in (("100", 100), ("0.1", 0.1), ("none", "none")):
        assert _parser().parse_args(["--val-split", text]).val_split == value
