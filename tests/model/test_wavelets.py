"""Causal DWT/IDWT filter banks against PyWavelets, and perfect reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from model.wavelets import DWT, IDWT, wavelet_delay

WAVELETS = ["db4", "haar", "db2", "sym5", "coif2", "bior3.5", "rbio2.4"]


def _signal(channels: int = 3, time: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, channels, time, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", WAVELETS)
def test_dwt_matches_pywt(name: str) -> None:
    x = _signal()
    coeffs = DWT(3, name)(x)
    a, d = pywt.dwt(x.double().numpy(), name, mode="zero")
    half = x.size(-1) // 2
    np.testing.assert_allclose(coeffs[:, 0::2].numpy(), a[..., :half], atol=1e-5)
    np.testing.assert_allclose(coeffs[:, 1::2].numpy(), d[..., :half], atol=1e-5)


@pytest.mark.parametrize("name", WAVELETS)
def test_idwt_matches_pywt_with_declared_delay(name: str) -> None:
    coeffs = _signal(channels=6, time=40, seed=1)
    y = IDWT(3, name)(coeffs)
    ref = pywt.idwt(coeffs[:, 0::2].double().numpy(), coeffs[:, 1::2].double().numpy(), name)
    delay = wavelet_delay(name)
    n = min(y.size(-1) - delay, ref.shape[-1])
    np.testing.assert_allclose(y[..., delay : delay + n].numpy(), ref[..., :n], atol=1e-5)


@pytest.mark.parametrize("name", WAVELETS)
def test_perfect_reconstruction(name: str) -> None:
    x = _signal(seed=2)
    y = IDWT(3, name)(DWT(3, name)(x))
    delay = wavelet_delay(name)
    assert delay == pywt.Wavelet(name).dec_len - 1
    torch.testing.assert_close(y[..., delay:], x[..., :-delay], atol=1e-5, rtol=0)


def test_filters_are_fixed_buffers() -> None:
    for bank in (DWT(4), IDWT(4)):
        assert list(bank.parameters()) == []
        assert {name for name, _ in bank.named_buffers()} == {"filters", "weight"}


@pytest.mark.parametrize("name", ["nope", "morl"])
def test_unknown_or_continuous_wavelet_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="discrete wavelet"):
        DWT(1, name)
