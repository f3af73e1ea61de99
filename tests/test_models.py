"""The model registry, walked as timm does: every registered network runs forward and backward."""

import pytest
import torch

from core.models import MODELS, NormedLinear, create_model

# A tiny input per model: the small CNN is made for 8x8 grey digits, the ResNets for 32x32 colour images.
INPUTS = {"small_cnn": (1, 8, 8), "resnet32": (3, 32, 32), "resnet18": (3, 32, 32)}
FEATURES = {"small_cnn": 64, "resnet32": 64, "resnet18": 512}
K, B = 7, 2


def test_every_registered_model_has_a_test_input():
    assert set(MODELS) == set(INPUTS), "a new model needs an entry in INPUTS and FEATURES"


@pytest.mark.parametrize("normed_head", [False, True], ids=["linear", "normed"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_and_backward(name, normed_head):
    torch.manual_seed(0)
    c, h, w = INPUTS[name]
    model = create_model(name, num_classes=K, in_channels=c, normed_head=normed_head)
    model.train()
    x = torch.randn(B, c, h, w)
    logits = model(x)
    assert logits.shape == (B, K) and logits.dtype == torch.float32
    out = model(x, return_features=True)
    assert isinstance(out, tuple) and len(out) == 2
    logits2, features = out
    assert logits2.shape == (B, K) and features.shape == (B, FEATURES[name])
    assert isinstance(model.head, NormedLinear) == normed_head

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
    # option-A shortcuts are parameter-free: the normed head only drops the 10 biases
    assert _params(create_model("resnet32", 10, normed_head=True)) == n - 10


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
        model = create_model(name, num_classes=K, in_channels=c, normed_head=True).eval()
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
