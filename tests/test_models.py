"""The model registry, walked as timm does: every registered network runs forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from core.models import HEAD_INITS, MODELS, NormedLinear, OptionAShortcut, create_model

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
    # U(-b, b) has std b / sqrt(3): a head drawn smaller (or zero) is not nn.Linear's
    assert authors.weight.std().item() == pytest.approx(FEATURES[name] ** -0.5 / 3 ** 0.5, rel=0.15)
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


def test_resnet32_is_he_et_al_s_cifar_network_stage_by_stage():
    """He et al. (2016), section 4.2, as Cao et al.'s resnet32 (the paper's network): a 3x3 stem of 16
    maps, then 5 blocks each at 32x32x16, 16x16x32 and 8x8x64, the first block of the 2nd and 3rd
    stage halving the side with a parameter-free (option A) shortcut."""
    model = create_model("resnet32", 10).eval()
    stem = model.body[0]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, stem.bias) == \
        (3, 16, (3, 3), (1, 1), (1, 1), None)
    blocks = [m for m in model.body if hasattr(m, "shortcut")]
    shapes = []
    for block in blocks:
        block.register_forward_hook(lambda _, __, out: shapes.append(tuple(out.shape[1:])))
    model(torch.zeros(1, 3, 32, 32))
    assert shapes == [(16, 32, 32)] * 5 + [(32, 16, 16)] * 5 + [(64, 8, 8)] * 5
    assert [type(b.shortcut).__name__ for b in blocks] == \
        ["Identity"] * 5 + ["OptionAShortcut"] + ["Identity"] * 4 + ["OptionAShortcut"] + ["Identity"] * 4


def test_the_option_a_shortcut_takes_every_other_pixel_and_pads_planes_over_4_zero_maps_each_side():
    # Cao et al.'s LambdaLayer: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
    x = torch.randn(2, 16, 8, 8)
    out = OptionAShortcut(32 - 16)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


@pytest.mark.parametrize("index", [3, 8])  # an identity block, then the first block of the 2nd stage
def test_a_resnet32_block_is_relu_of_its_residual_plus_its_shortcut(index):
    torch.manual_seed(0)
    block = create_model("resnet32", 10).body[index].eval()
    x = torch.randn(2, block.conv1.in_channels, 16, 16)
    residual = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), F.relu(residual + block.shortcut(x)))


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
