"""The mean-and-scale hyperprior with channel-slice context (``context``): its warm start from a
scale hyperprior and its training pass."""

from __future__ import annotations

import pytest
import torch

from aecompress.errors import ModelError
from aecompress.nn import build
from aecompress.nn.context import ContextCodec
from tests.conftest import tiny_hyperprior


def _warm_started() -> tuple[torch.nn.Module, ContextCodec]:
    base = tiny_hyperprior()
    config = {"channels": 8, "hyper_channels": 8, "hyper_latent_channels": 8}
    model = build("context", config)
    assert isinstance(model, ContextCodec)
    model.adopt(base, None)
    return base, model.eval()


def test_warm_start_begins_where_the_hyperprior_was() -> None:
    base, model = _warm_started()
    torch.manual_seed(3)
    y = torch.randn(1, 100, 12, 16) * 4
    with torch.no_grad():
        z_base = base.h_a(y.abs())
        z = model.h_a(torch.cat([y.abs(), y], dim=1))
        torch.testing.assert_close(z, z_base, rtol=1e-5, atol=1e-5)
        zq = torch.round(z_base)
        log2, mean = model.hyper_params(zq, (12, 16))
        torch.testing.assert_close(log2, base.hyper_scales(zq, (12, 16)))
        assert torch.count_nonzero(mean) == 0
        decoded = [y[:, : model.slice_width]]
        log2_1, mean_1 = model.slice_params(1, log2, mean, decoded)
        torch.testing.assert_close(log2_1, log2[:, 20:40])
        assert torch.count_nonzero(mean_1) == 0
    n = base.log_gain.shape[0]
    torch.testing.assert_close(model.log_gain[:n], base.log_gain)
    # the extra rate point continues the last step of the gains, per log-lambda
    lam = torch.tensor(model.lambdas).log()
    slope = (base.log_gain[n - 1] - base.log_gain[n - 2]) / (lam[n - 1] - lam[n - 2])
    torch.testing.assert_close(model.log_gain[n], base.log_gain[n - 1] + slope * (lam[n] - lam[n - 1]))


def test_training_pass_reaches_the_context_networks() -> None:
    _, model = _warm_started()
    model.train()
    torch.manual_seed(0)
    out = model(torch.rand(2, 3, 64, 64))
    assert out.x_hat.shape == (2, 3, 64, 64)
    assert out.lmbda is not None and out.lmbda.shape == (2,)
    assert torch.isfinite(out.bits) and out.bits > 0
    (out.bits + out.x_hat.square().sum()).backward()
    for net in model.context:
        last = net[-1]
        assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    first = model.h_s[4]
    assert first.weight.grad is not None and first.weight.grad[100:].abs().sum() > 0


def test_slices_must_divide_the_channels() -> None:
    with pytest.raises(ModelError, match="slices"):
        build("context", {"channels": 8, "slices": 3})
