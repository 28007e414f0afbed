"""realtime.rt.GcFreeze: the cyclic garbage collector is kept off the audio path while a stream
runs (the file backend stands for every backend: the hold lives in their common base)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import soundfile as sf

from realtime.io import DeviceError, open_duplex
from realtime.rt import GcFreeze, gc_freeze


def copy(indata: np.ndarray, outdata: np.ndarray, status: int) -> None:
    outdata[:] = indata


def test_nested_holds_freeze_until_the_last_release_and_count_collections() -> None:
    g = GcFreeze()
    cycles = [[] for _ in range(5000)]
    for c in cycles:
        c.append(c)
    g.hold()
    try:
        assert g.held and gc.get_freeze_count() >= len(cycles)
        g.hold()
        g.release()
        assert g.held and gc.get_freeze_count() >= len(cycles)
        gc.collect()
        gc.collect(0)
        assert g.collections >= 2 and g.longest_s > 0
    finally:
        g.release()
    assert not g.held and gc.get_freeze_count() == 0
    assert g.collections >= 2, "the figures stay readable after the release"
    g.release()  # one release too many is harmless
    assert gc.get_freeze_count() == 0
    with g:
        assert gc.get_freeze_count() > 0 and g.collections == 0, "a first hold starts afresh"
    assert gc.get_freeze_count() == 0


def test_a_stream_holds_the_freeze_from_start_to_stop_or_close(tmp_path) -> None:
    rate = 8000
    src = tmp_path / "in.wav"
    sf.write(src, np.zeros((rate * 5, 1), np.float32), rate, subtype="FLOAT")
    stream = open_duplex(copy, backend="file", samplerate=rate, blocksize=256, input_file=src)
    assert not gc_freeze.held, "opening alone does not freeze"
    stream.start()
    stream.start()  # a second start holds nothing more
    assert gc_freeze.held and gc.get_freeze_count() > 0
    stream.stop()
    assert not gc_freeze.held and gc.get_freeze_count() == 0
    stream.start()
    assert gc_freeze.held
    stream.close()  # without stop()
    assert not gc_freeze.held and gc.get_freeze_count() == 0
    with pytest.raises(DeviceError, match="closed"):
        stream.start()
    assert not gc_freeze.held, "a start that fails gives the hold back"
