"""The recorder: the worker only copies into rings; a writer thread puts the blocks on disk."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import soundfile as sf

from realtime.recorder import Recorder

RATE, BLOCK = 16000, 256


def _blocks(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (BLOCK, 2)).astype(np.float32) for _ in range(n)]


def test_blocks_from_the_worker_reach_the_files_in_order(tmp_path):
    xs, ys = _blocks(300, 0), _blocks(300, 1)
    rec = Recorder(RATE, 2, str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), buffer_s=1.0,
                   period_s=0.005)  # fmt: skip

    def worker() -> None:  # a producer thread, as the engine's worker is
        for x, y in zip(xs, ys, strict=True):
            rec.write(x, y)
            time.sleep(0.002)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    rec.close()
    rec.close()  # idempotent
    assert rec.dropped == 0
    got_in, sr = sf.read(tmp_path / "in.wav", dtype="float32")
    got_out, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == RATE
    np.testing.assert_array_equal(got_in, np.concatenate(xs))
    np.testing.assert_array_equal(got_out, np.concatenate(ys))


def test_a_disk_that_falls_behind_loses_counted_frames_and_never_blocks_the_worker(tmp_path):
    # the writer drains only at close (period 60 s): a 0.1 s buffer takes 1600 frames per file
    rec = Recorder(RATE, 2, None, str(tmp_path / "out.wav"), buffer_s=0.1, period_s=60.0)
    ys = _blocks(20, 2)
    for y in ys:
        rec.write(y, y)
    assert rec.dropped == 20 * BLOCK - 1600
    rec.close()
    got, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    np.testing.assert_array_equal(got, np.concatenate(ys)[:1600])
    assert not (tmp_path / "in.wav").exists()


def test_nothing_to_record_starts_no_thread():
    rec = Recorder(RATE, 1, None, None)
    assert not rec.active and rec.dropped == 0
    names = {t.name for t in threading.enumerate()}
    assert "wavehost-recorder" not in names
    rec.close()


def test_the_writer_takes_the_real_time_priority_asked_for(tmp_path):
    """In a real-time run the writer must not hold the GIL at normal priority (see Recorder)."""
    rec = Recorder(RATE, 1, None, str(tmp_path / "out.wav"), rt_priority=1)
    try:
        tid = rec._thread.native_id
        deadline = time.monotonic() + 5.0
        while os.sched_getscheduler(tid) != os.SCHED_FIFO and rec.rt_error is None:
            assert time.monotonic() < deadline, "the writer neither got SCHED_FIFO nor said why"
            time.sleep(0.01)
        if rec.rt_error is None:  # root, CAP_SYS_NICE or an rtprio limit (CI runs as root)
            assert os.sched_getparam(tid).sched_priority == 1
        else:
            assert os.sched_getscheduler(tid) == os.SCHED_OTHER
    finally:
        rec.close()
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller keeps its own policy
