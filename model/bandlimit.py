"""The top of a plugin's output band: a minimum-phase FIR low-pass for the network's residual.

A wideband reference resampled to the output rate (soxr here, any good resampler elsewhere) is
empty in the last few hundred hertz below the output Nyquist frequency, where the resampler's
transition band lies. The network's residual is not: near Nyquist it carries a little energy
nothing asked for, and on a log-power scale (LSD) those bins weigh as much as any other.
Low-passing the residual there costs no latency when the filter is minimum-phase: its group
delay is a fraction of a sample at low frequencies, and the residual below the transition band
passes at its level.
"""

from __future__ import annotations

import numpy as np

TAPS = 64


def lowpass_taps(rate: int, top_hz: float, taps: int = TAPS, width_hz: float = 300.0) -> np.ndarray:
    """Impulse response (``taps`` samples) of a minimum-phase low-pass at ``rate`` Hz that passes
    up to ``top_hz − width_hz`` (within 0.11 dB) and stops from ``top_hz`` on (by at least 23 dB,
    at 16 kHz with the defaults).

    A Parks-McClellan linear-phase design of ``2 · taps − 1`` taps turned minimum-phase
    (homomorphic: the magnitude is the square root of the prototype's).
    """
    from scipy import signal  # the train extra: only exports need it

    nyquist = rate / 2
    if not 0 < top_hz - width_hz < top_hz < nyquist:
        raise ValueError(
            f"band top {top_hz:g} Hz: needs {width_hz:g} Hz < top < {nyquist:g} Hz (Nyquist)"
        )
    proto = signal.remez(
        2 * taps - 1, [0, top_hz - width_hz, top_hz, nyquist], [1, 0], weight=[1, 10], fs=rate
    )
    return signal.minimum_phase(proto, method="homomorphic", n_fft=1 << 16)
