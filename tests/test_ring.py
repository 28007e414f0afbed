"""Ring buffer: contents, wrap-around, counters, under random block sizes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime.ring import Ring


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 300),
    channels=st.integers(1, 3),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 400)), min_size=1, max_size=60),
)
def test_ring_matches_a_fifo_model(capacity, channels, ops):
    ring = Ring(capacity, channels)
    model: list[np.ndarray] = []
    counter = 0
    overflow = underflow = 0
    for is_write, n in ops:
        if is_write:
            frames = (
                np.arange(counter, counter + n, dtype=np.float32)[:, None]
                + np.arange(channels, dtype=np.float32) * 0.25
            )
            counter += n
            fit = min(n, capacity - len(model))
            assert ring.write(frames) == fit
            model.extend(frames[:fit])
            overflow += n - fit
        else:
            out = np.full((n, channels), -1.0, np.float32)
            got = ring.read(out)
            want = min(n, len(model))
            assert got == want
            if want:
                np.testing.assert_array_equal(out[:got], np.array(model[:want]))
            assert np.all(out[got:] == -1.0)  # untouched beyond what was read
            del model[:want]
            underflow += n - want
        assert ring.available() == len(model)
        assert ring.space() == capacity - len(model)
    assert ring.overflow == overflow
    assert ring.underflow == underflow


def test_skip_drops_frames_in_order():
    ring = Ring(8)
    ring.write(np.arange(6, dtype=np.float32)[:, None])
    assert ring.skip(4) == 4
    out = np.zeros((4, 1), np.float32)
    assert ring.read(out) == 2
    np.testing.assert_array_equal(out[:2, 0], [4, 5])
    assert ring.skip(3) == 0


def test_bad_capacity_is_refused():
    try:
        Ring(0)
    except ValueError as exc:
        assert "capacity" in str(exc)
    else:
        raise AssertionError("Ring(0) accepted")
