"""The model registry, walked as timm does: every registered network runs forward and backward."""

import pytest
import torch

from core.models import HEAD_INITS, MODELS, NormedLinear, create_model

# A tiny input per model: the small CNN is made for 8x8 grey digits, the ResNets for 32x32 colour images.
INPUTS = {"small_cnn": (1, 8, 8), "resnet32": (3, 32, 32), "resnet18": (3, 32, 32)}
FEATURES = {"small_cnn": 64, "resnet32": 64, "resnet18": 512}
K, B = 7, 2


def test_every_registered_model_has_a_test_input():
    assert set(MODELS) == set(INPUTS), "a new model needs an entry in INPUTS and FEATURES"


HEADS = {"cosine": dict(cosine_head=True), "linear": {}, "biased": dict(head_bias=True)}


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_and_backward(name, head):
    torch.manual_seed(0)
    c, h, w = INPUTS[name]
    model = create_model(name, num_classes=K, in_channels=c, **HEADS[head])
    model.train()
    x = torch.randn(B, c, h, w)
    logits = model(x)
    assert logits.shape == (B, K) and logits.dtype == torch.float32
    out = model(x, return_features=True)
    assert isinstance(out, tuple) and len(out) == 2
    logits2, features = out
    assert logits2.shape == (B, K) and features.shape == (B, FEATURES[name])
    assert isinstance(model.head, NormedLinear) == (head == "cosine")

    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, K - 1]))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("body.0")), "the stem gets no gradient"
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_in_channels_and_num_classes_are_honoured(name):
    _, h, w = INPUTS[name]
    model = create_model(name, num_classes=3, in_channels=2).eval()
    assert model(torch.zeros(1, 2, h, w)).shape == (1, 3)
    with pytest.raises(RuntimeError):
        model(torch.zeros(1, 5, h, w))


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet32_has_about_0_46_million_parameters():
    n = _params(create_model("resnet32", 10))
    assert 0.45e6 <= n <= 0.48e6, n
    # option-A shortcuts are parameter-free; the heads are 64 x 10 weights, and 10 biases if asked
    assert _params(create_model("resnet32", 10, cosine_head=True)) == n
    assert _params(create_model("resnet32", 10, head_bias=True)) == n + 10


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_linear_head_is_drawn_as_its_init_says(name):
    """"pytorch" (the authors' code): nn.Linear's own U(-1/sqrt(F), 1/sqrt(F)); "kaiming_normal" (Cao
    et al.'s): re-drawn with the convolutions, std sqrt(2/F)."""
    c = INPUTS[name][0]
    torch.manual_seed(0)
    authors = create_model(name, 10, c).head
    assert authors.bias is None
    assert authors.weight.abs().max() <= FEATURES[name] ** -0.5
    torch.manual_seed(0)
    cao = create_model(name, 10, c, head_bias=True, head_init="kaiming_normal").head
    assert cao.bias is not None and cao.bias.shape == (10,)
    assert cao.weight.std().item() == pytest.approx((2 / FEATURES[name]) ** 0.5, rel=0.15)
    assert cao.weight.abs().max() > FEATURES[name] ** -0.5  # could not come from the other draw
    with pytest.raises(ValueError, match="head_init.*kaiming_normal"):
        create_model(name, 10, c, head_init="xavier")
    assert HEAD_INITS == ("pytorch", "kaiming_normal")


def test_cao_et_al_head_is_the_platforms_former_network_bit_for_bit():
    """The runs committed before the authors' head became the default (docs/results/table12/, the
    BatchNorm runs, the demo tables) reproduce with ``head_bias: true, head_init: kaiming_normal``: the
    same initial weights. Golden value: printed by the former code (commit 5292099,
    ``create_model("resnet32", 10)`` after seed 0)."""
    torch.manual_seed(0)
    state = create_model("resnet32", 10, 3, head_bias=True, head_init="kaiming_normal").state_dict()
    total = sum(t.double().square().sum().item() for t in state.values() if t.is_floating_point())
    assert total == pytest.approx(4560.4838599582945, rel=1e-12)


def test_resnet18_is_the_cifar_variant_with_about_11_million_parameters():
    model = create_model("resnet18", 10)
    assert 11.0e6 <= _params(model) <= 11.3e6, _params(model)  # 11.17 M for the CIFAR ResNet-18
    stem = model.body[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_normed_head_gives_cosines_in_minus_one_to_one():
    torch.manual_seed(0)
    for name in sorted(MODELS):
        c, h, w = INPUTS[name]
        model = create_model(name, num_classes=K, in_channels=c, cosine_head=True).eval()
        logits = model(10 * torch.randn(4, c, h, w))
        assert logits.min() >= -1 - 1e-5 and logits.max() <= 1 + 1e-5, name
    # and it is exactly the cosine between the features and each weight column
    head = NormedLinear(5, 3)
    f = torch.randn(4, 5)
    expected = torch.stack([torch.cosine_similarity(f, head.weight[:, j].expand(4, 5), dim=1) for j in range(3)], 1)
    torch.testing.assert_close(head(f), expected, rtol=1e-5, atol=1e-6)
    # a feature parallel to a weight column gets cosine 1 for that class
    assert head(head.weight[:, 1][None] * 3.0)[0, 1].item() == pytest.approx(1.0, abs=1e-6)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        create_model("resnet50", 10)
    message = str(err.value)
    assert "resnet50" in message
    for name in MODELS:
        assert name in message
