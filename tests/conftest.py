"""Shared fixtures. Ray is started at most once per test session (see ``ray_session``)."""

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))


def tiny_config(**overrides):
    """A 2-epoch digits run in which warm-up, the LR decay and the DRW switch all happen."""
    base = dict(dataset="digits", epochs=2, warmup_epochs=1, milestones=[1], drw_epoch=1, batch_size=64,
                device="cpu")
    base.update(overrides)
    return base


@pytest.fixture
def tiny():
    return tiny_config
