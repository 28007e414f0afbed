"""Streaming (cached, time-major) blocks equal their offline causal forms for any block sizes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from model.streaming import (
    Analysis,
    AnalysisConv,
    CausalConv,
    Delay,
    Synthesis,
    causal_delay,
)
from model.wavelets import DWT, IDWT


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# name -> (factory, input channels, input block multiple)
CASES: dict[str, tuple[Callable[[], nn.Module], int, int]] = {
    "conv k3": (lambda: CausalConv(3, 4, 3), 3, 1),
    "conv k1": (lambda: CausalConv(3, 4, 1), 3, 1),
    "strided conv": (lambda: CausalConv(3, 4, 5, stride=2), 3, 2),
    "dilated conv": (lambda: CausalConv(3, 4, 3, dilation=4), 3, 1),
    "analysis": (lambda: Analysis(_rand(2, 6, seed=1), 3, 2), 3, 2),
    "dwt": (lambda: DWT(3, "db4"), 3, 2),
    "dwt + conv": (lambda: AnalysisConv(DWT(3, "db4"), 5, 3), 3, 2),
    "haar + conv k4": (lambda: AnalysisConv(DWT(3, "haar"), 5, 4), 3, 2),
    "idwt": (lambda: IDWT(3, "db4"), 6, 1),
    "synthesis x3": (lambda: Synthesis(_rand(2, 7, seed=2), 2, 3, offset=2), 4, 1),
    "interpolator": (lambda: Synthesis(_rand(1, 3, seed=3), 1, 2), 1, 1),
    "zero stuffing": (lambda: Synthesis(torch.ones(1, 1), 2, 2), 2, 1),
    "delay": (lambda: Delay(5, 3), 3, 1),
}


def _stream(block: nn.Module, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Feed ``x`` ``(batch, channels, time)`` block by block (time-major) through ``block``."""
    outs, start = [], 0
    with torch.no_grad():
        for n in sizes:
            outs.append(block(x[..., start : start + n].transpose(1, 2)))
            start += n
    return torch.cat(outs, 1).transpose(1, 2)


@pytest.mark.parametrize("case", CASES)
@settings(max_examples=15, deadline=None)
@given(
    blocks=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    batch=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_streaming_equals_offline(case: str, blocks: list[int], batch: int, seed: int) -> None:
    factory, channels, multiple = CASES[case]
    offline = factory()
    for p in offline.parameters():
        nn.init.normal_(p, std=0.5, generator=torch.Generator().manual_seed(seed))
    sizes = [multiple * b for b in blocks]
    x = _rand(batch, channels, sum(sizes), seed=seed)
    with torch.no_grad():
        expected = offline(x)
    stream = offline.streaming()
    stream.clear(batch)
    got = _stream(stream, x, sizes)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", ["conv k3", "dwt + conv", "idwt", "delay"])
def test_clear_restarts_and_follows_batch(case: str) -> None:
    factory, channels, multiple = CASES[case]
    offline = factory()
    stream = offline.streaming()
    x = _rand(2, channels, 8 * multiple, seed=5)
    with torch.no_grad():
        expected = offline(x)
    _stream(stream, _rand(1, channels, 4 * multiple, seed=6), [4 * multiple])
    stream.clear(2)
    torch.testing.assert_close(_stream(stream, x, [8 * multiple]), expected, atol=1e-5, rtol=0)
    assert stream.cache.shape[0] == 2


def test_causal_delay() -> None:
    x = _rand(1, 2, 10)
    y = causal_delay(x, 3)
    assert torch.equal(y[..., :3], torch.zeros(1, 2, 3))
    assert torch.equal(y[..., 3:], x[..., :7])
    assert causal_delay(x, 0) is x


def test_dilated_conv_reaches_back_dilation_times_the_taps() -> None:
    """Output ``n`` of a dilation-4, kernel-3 conv depends on inputs ``n``, ``n - 4``, ``n - 8``
    only; a dilation with a stride is refused."""
    conv = CausalConv(1, 1, 3, dilation=4)
    x = torch.zeros(1, 1, 20)
    x[..., 5] = 1.0
    with torch.no_grad():
        y = conv(x) - conv(torch.zeros_like(x))
    assert torch.nonzero(y[0, 0]).flatten().tolist() == [5, 9, 13]
    with pytest.raises(ValueError, match="dilation"):
        CausalConv(1, 1, 3, stride=2, dilation=2)
