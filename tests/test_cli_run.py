"""``wavehost run`` on the file clock: Ctrl-C stops cleanly, recordings are finalized."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import soundfile as sf


def test_ctrl_c_stops_cleanly_and_finalizes_files(tmp_path):
    rate = 16000
    x = (0.3 * np.sin(2 * np.pi * 300 * np.arange(rate * 30) / rate)).astype(np.float32)
    sf.write(tmp_path / "in.wav", x, rate, subtype="FLOAT")
    cmd = [
        sys.executable,
        "-m",
        "realtime.cli",
        "run",
        "--backend",
        "file",
        "--input-file",
        str(tmp_path / "in.wav"),
        "--output-file",
        str(tmp_path / "dev.wav"),
        "--plugin",
        "resample-8k-16k",
        "--rate",
        str(rate),
        "--record",
        str(tmp_path / "out.wav"),
        "--report",
        str(tmp_path / "r.json"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "Ctrl-C stops" not in proc.stderr.readline():
        pass
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "total" in out and "block time over" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert 1.5 < report["seconds"] < 10
    recorded, sr = sf.read(tmp_path / "out.wav")  # a finalized, readable file
    assert sr == rate and abs(len(recorded) - report["callbacks"] * 256) <= 4 * 256
    assert np.abs(recorded).max() > 0.2
    device_out, _ = sf.read(tmp_path / "dev.wav")  # the file "device" was finalized too
    assert len(device_out) > rate
