"""The noise probe reads a plugin's latency and its seams from its output alone."""

import numpy as np
import pytest
import torch
from plugins import Fir, Gain

from realtime.loader import load_plugin
from realtime.probe import correlate, measure_latency, split_difference


@pytest.mark.parametrize(("delay", "channels"), [(0, 1), (1, 1), (37, 2), (300, 1)])
def test_lag_of_a_delay_is_its_length(delay, channels):
    est = measure_latency(load_plugin(Gain(48000, 0.5, delay=delay, channels=channels)))
    assert (est.lag, est.declared) == (delay, delay)
    assert est.correlation == pytest.approx(1.0, abs=0.01) and est.measurable


def test_lag_is_read_whatever_the_plugin_declares():
    lying = Gain(16000, delay=12)
    lying.latency = 0
    est = measure_latency(load_plugin(lying))
    assert (est.lag, est.declared) == (12, 0)


def test_lag_across_a_rate_change_is_at_the_output_rate():
    est = measure_latency(load_plugin("resample-8k-16k"))
    assert est.lag == est.declared == 32 and est.correlation > 0.99


def test_a_phase_inverting_filter_still_has_its_lag():
    est = measure_latency(load_plugin(Fir([0.0, 0.0, -0.9])))  # -0.9 x[n - 2]
    assert est.lag == 2 and est.correlation == pytest.approx(1.0, abs=0.01)


def test_output_unrelated_to_the_input_is_not_measurable():
    class Noise(Gain):
        def forward(self, x):
            return torch.randn_like(x)

    est = measure_latency(load_plugin(Noise(16000)))
    assert not est.measurable and est.correlation < 0.1


def test_split_difference_is_zero_with_state_and_large_without():
    assert split_difference(load_plugin(Fir([0.2, 0.5, 0.3]))) == 0.0

    class Stateless(Gain):
        def forward(self, x):
            return torch.nn.functional.pad(x, (1, 0))[..., :-1] + x  # x[n] + x[n-1], no cache

    assert split_difference(load_plugin(Stateless(16000))) > 1e-3


def test_correlation_of_a_known_lag_and_gain():
    x = np.random.default_rng(0).standard_normal(4000)
    y = np.roll(x, 123) * 0.5
    y[:123] = 0.0
    c = correlate(x, y, 500)
    assert int(np.argmax(c)) == 123 and c[123] == pytest.approx(0.5, rel=0.05)
