"""The moving average of the weights (model.ema)."""

from __future__ import annotations

import pytest
import torch

from model.ema import WeightEMA


def _net() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.BatchNorm1d(2))
    net[1].running_mean.fill_(0.5)
    return net


def test_update_is_the_average_with_its_warm_up() -> None:
    net = _net()
    ema = WeightEMA(net, decay=0.99)
    start = [p.clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(2.0)
    ema.update(net, step=0)  # warm-up: d = 1 / 10
    for s, p0, p in zip(ema.shadow.parameters(), start, net.parameters(), strict=True):
        torch.testing.assert_close(s, 0.1 * p0 + 0.9 * p)
    assert torch.equal(ema.shadow[1].running_mean, net[1].running_mean)  # copied, not averaged
    before = [s.clone() for s in ema.shadow.parameters()]
    ema.update(net, step=10_000)  # past the warm-up: d = decay
    for s, b, p in zip(ema.shadow.parameters(), before, net.parameters(), strict=True):
        torch.testing.assert_close(s, 0.99 * b + 0.01 * p)
    assert all(not s.requires_grad for s in ema.shadow.parameters())
    assert all(p.requires_grad for p in net.parameters())  # the trained network is untouched


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_decay_outside_zero_one_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        WeightEMA(_net(), decay)
