"""Corpora: a tiny dataset built from synthesised WAVs in tmp folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from model.corpora import (
    CorpusError,
    Manifest,
    SegmentDataset,
    Source,
    build_dataset,
    export_pieces,
    main,
    measure_bandwidth,
    measure_holes,
    unseen_speech_sources,
)

RATE_SRC = 32000


def lowpass(x: np.ndarray, rate: int, cutoff: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / rate) > cutoff] = 0
    return np.fft.irfft(spec, len(x))


def utterance(seed: int, rate: int = RATE_SRC, seconds: float = 1.5) -> np.ndarray:
    """Full-band noise bursts with silence before and after: a crude 'utterance'."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = np.zeros(n)
    core = slice(n // 6, n - n // 6)
    x[core] = 0.2 * rng.standard_normal(core.stop - core.start)
    return x


def write(path: Path, x: np.ndarray, rate: int = RATE_SRC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """4 speakers × 3 files, plus a narrowband file, an 8 kHz file and an unreadable one."""
    root = tmp_path / "corpus"
    for s, spk in enumerate("ABCD"):
        for i in range(3):
            write(root / f"spk{spk}" / f"u{i}.wav", utterance(10 * s + i))
    write(root / "spkA" / "narrow.wav", lowpass(utterance(99), RATE_SRC, 4000))
    write(root / "spkB" / "phone.wav", utterance(98, rate=8000), rate=8000)
    (root / "spkC" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    return root


def build(root: Path, out: Path, **kw: object) -> Manifest:
    args = {
        "rate": 16000,
        "segment_s": 0.5,
        "min_band_hz": 7500,
        "val_fraction": 0.25,
        "seed": 0,
        "progress": False,
    }
    args.update(kw)
    return build_dataset([root], out, **args)  # type: ignore[arg-type]


def test_measure_bandwidth() -> None:
    x = utterance(1, seconds=2.0)
    assert measure_bandwidth(x, RATE_SRC) > 15000
    assert measure_bandwidth(lowpass(x, RATE_SRC, 5000), RATE_SRC) == pytest.approx(5000, abs=300)
    assert measure_bandwidth(np.zeros(1000), RATE_SRC) == 0.0


def holed(seed: int, share: float) -> np.ndarray:
    """An utterance whose last ``share`` of the voiced part lost everything above 3 kHz, as a
    low-bitrate coder leaves it, then a quiet (−30 dB) low-passed tail that does not count."""
    x = utterance(seed, seconds=3.0)
    core = np.flatnonzero(x)
    cut = core[0] + round((1 - share) * len(core))
    x[cut : core[-1] + 1] = lowpass(x[cut : core[-1] + 1], RATE_SRC, 3000)
    tail = 0.03 * lowpass(utterance(seed + 1, seconds=1.0), RATE_SRC, 3000)
    return np.concatenate([x, tail])


def test_measure_holes() -> None:
    """The share of loud frames with an empty band above ``from_hz``: the low-passed part of
    the voiced audio counts, the quiet tail does not, and the long-term band stays wide."""
    assert measure_holes(utterance(1, seconds=3.0), RATE_SRC, 3750) == 0.0
    for share in (0.25, 0.5):
        x = holed(2, share)
        assert measure_holes(x, RATE_SRC, 3750) == pytest.approx(share, abs=0.06)
        assert measure_holes(x, RATE_SRC, 2500) == 0.0  # the band it kept
        assert measure_bandwidth(x, RATE_SRC) > 15000
    assert measure_holes(np.zeros(40000), RATE_SRC, 3750) == 0.0


def test_build_drops_files_with_emptied_frames(corpus: Path, tmp_path: Path) -> None:
    """``max_holes`` drops a file whose high band is empty in too many loud frames, counts it as
    ``holes`` and records every measured file's share; a set built before the filter existed
    (no ``max_holes`` in its manifest) is the same as one built without it."""
    write(corpus / "spkD" / "vorbis.wav", holed(3, 0.5))
    write(corpus / "spkD" / "mostly.wav", holed(4, 0.1))
    m = build(corpus, tmp_path / "holes", max_holes=0.2)
    files = {f["path"]: f for f in m.data["files"]}
    assert files["spkD/vorbis.wav"]["status"] == "holes"
    assert files["spkD/vorbis.wav"]["holes"] == pytest.approx(0.5, abs=0.06)
    assert files["spkD/mostly.wav"]["status"] == "kept"
    assert files["spkA/u0.wav"]["holes"] == 0.0
    assert m.data["filters"]["corpus"]["holes"]["files"] == 1
    assert "at most 20% of loud frames" in m.summary()
    plain = build(corpus, tmp_path / "plain")
    assert {f["status"] for f in plain.data["files"] if f["path"].startswith("spkD/")} == {"kept"}
    assert all("holes" not in f for f in plain.data["files"])
    path = tmp_path / "plain" / "manifest.json"
    old = json.loads(path.read_text())
    del old["max_holes"]
    for stats in old["filters"].values():
        del stats["holes"]
    path.write_text(json.dumps(old))
    assert build(corpus, tmp_path / "plain").data == old
    assert "| holes |" in Manifest.load(tmp_path / "plain").summary()  # reads old sets
    with pytest.raises(CorpusError, match=r"max_holes is a share of frames in \[0, 1\], not 1.5"):
        build(corpus, tmp_path / "bad", max_holes=1.5)


def test_build_filters_and_split(corpus: Path, tmp_path: Path) -> None:
    m = build(corpus, tmp_path / "ds")
    stats = m.data["filters"]["corpus"]
    assert stats["found"]["files"] == 15
    assert stats["unreadable"]["files"] == 1
    assert stats["rate"]["files"] == 1
    assert stats["band"]["files"] == 1  # the file low-passed at 4 kHz
    assert stats["kept"]["files"] == 12
    status = {f["path"]: f["status"] for f in m.data["files"]}
    assert status["spkA/narrow.wav"] == "band" and status["spkB/phone.wav"] == "rate"
    # split by speaker folder: every file of a speaker on the same side, no speaker on both
    train, val = set(m.data["splits"]["train"]["groups"]), set(m.data["splits"]["val"]["groups"])
    assert train and val and not train & val
    sides = {(f["group"], f["split"]) for f in m.data["files"]}
    assert len(sides) == len({g for g, _ in sides}) == 4
    # segments: 3 kept files × ~1 s voiced per speaker → 6 segments of 0.5 s
    ds = SegmentDataset(m, "train")
    assert len(ds) == m.data["splits"]["train"]["segments"] > 0
    item = ds[len(ds) - 1]
    assert item.shape == (1, 8000) and item.dtype.is_floating_point
    assert 0.05 < float(item.std()) < 0.5
    with pytest.raises(IndexError):
        ds[len(ds)]
    assert "kept" in m.summary()


def test_deterministic_and_built_once(corpus: Path, tmp_path: Path) -> None:
    a = build(corpus, tmp_path / "a")
    b = build(corpus, tmp_path / "b")
    assert a.data["splits"] == b.data["splits"]
    for (pa, _), (pb, _) in zip(a.shards("train"), b.shards("train"), strict=True):
        np.testing.assert_array_equal(np.load(pa), np.load(pb))
    stamp = (tmp_path / "a" / "manifest.json").stat().st_mtime_ns
    assert build(corpus, tmp_path / "a").data == a.data
    assert (tmp_path / "a" / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(CorpusError, match="other settings"):
        build(corpus, tmp_path / "a", segment_s=0.25)


def test_val_fraction_one_holds_every_group_out(corpus: Path, tmp_path: Path) -> None:
    """A test set: every speaker folder in validation, none in training (a fraction just under 1
    still leaves one group to train on)."""
    m = build(corpus, tmp_path / "test", val_fraction=1.0)
    assert m.data["splits"]["train"]["segments"] == 0 and not m.data["splits"]["train"]["groups"]
    assert len(m.data["splits"]["val"]["groups"]) == 4
    assert len(SegmentDataset(m, "val")) > 0 and len(SegmentDataset(m, "train")) == 0
    almost = build(corpus, tmp_path / "almost", val_fraction=0.99)
    assert len(almost.data["splits"]["train"]["groups"]) == 1


def test_unseen_speech_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The held-out speech set takes ktuberling's language folders (not the ``sr@*`` copies of
    ``sr``) and the Dutch fillets-ng dub (not the Czech one, which is in training), all held out
    by default; it is refused beside training sources."""
    root = tmp_path / "cache" / "debs" / "root"
    words = root / "usr/share/ktuberling/sounds"
    for lang in ("en", "fr", "sr", "sr@latin"):
        write(words / lang / "hat.wav", utterance(len(lang)))
    (words / "en.soundtheme").write_text("<theme/>")
    game = root / "usr/share/games/fillets-ng/sound"
    for level, lang in (("start", "nl"), ("cave", "nl"), ("start", "cs")):
        write(game / level / lang / "line.ogg", utterance(len(level)))
    kt, nl = unseen_speech_sources(root)
    assert sorted(str(f.relative_to(words)) for f in kt.files()) == [
        "en/hat.wav",
        "fr/hat.wav",
        "sr/hat.wav",
    ]
    assert sorted(str(f.relative_to(game)) for f in nl.files()) == [
        "cave/nl/line.ogg",
        "start/nl/line.ogg",
    ]
    monkeypatch.setenv("WAVEHOST_CACHE", str(tmp_path / "cache"))
    assert main(["--unseen-speech", "--segment", "0.5"]) == 0
    m = Manifest.load(tmp_path / "cache" / "datasets" / "unseen-speech16k")
    assert m.data["val_fraction"] == 1.0 and m.data["splits"]["train"]["segments"] == 0
    assert m.data["max_holes"] == 0.2  # a test set's references must be wideband frame by frame
    assert all(0.0 <= f["holes"] <= 0.2 for f in m.data["files"] if f["status"] == "kept")
    assert len(m.data["splits"]["val"]["groups"]) == 5
    with pytest.raises(SystemExit):
        main(["--unseen-speech", "--speech"])


def test_single_folder_splits_by_file(tmp_path: Path) -> None:
    for i in range(10):
        write(tmp_path / "flat" / f"f{i}.wav", utterance(i))
    m = build(tmp_path / "flat", tmp_path / "ds", val_fraction=0.2)
    val = [f["path"] for f in m.data["files"] if f["split"] == "val"]
    assert len(val) == 2


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "no audio files"),
        ("broken", "could be decoded"),
        ("narrowband_rate", "no file at 16000 Hz or more .found 8000 Hz"),
        ("narrowband_band", "no file covers 7500 Hz"),
    ],
)
def test_bad_folders(tmp_path: Path, setup: str, message: str) -> None:
    root = tmp_path / "bad"
    if setup != "missing":
        (root / "sub").mkdir(parents=True)
        (root / "notes.txt").write_text("no audio here")
    if setup == "broken":
        (root / "sub" / "x.ogg").write_bytes(b"OggS garbage")
    if setup == "narrowband_rate":
        write(root / "sub" / "x.wav", utterance(0, rate=8000), rate=8000)
    if setup == "narrowband_band":
        write(root / "sub" / "x.wav", lowpass(utterance(0), RATE_SRC, 3400))
    with pytest.raises(CorpusError, match=message) as err:
        build(root, tmp_path / "out")
    assert "\n" not in str(err.value)


def test_cli_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no audio files") and "\n" not in err


def test_source_pattern_and_groups(tmp_path: Path) -> None:
    write(tmp_path / "lang" / "alpha" / "a.wav", utterance(0))
    write(tmp_path / "lang" / "skip.wav", utterance(1))
    src = Source("s", tmp_path, "*/*/*.wav")
    assert [p.name for p in src.files()] == ["a.wav"]
    assert src.group(src.files()[0]) == "lang"


def test_stereo_min_rate_and_file_cap(tmp_path: Path) -> None:
    """Stereo sets keep both channels (a mono file on both), accept files down to ``min_rate``
    and keep at most ``max_file_s`` seconds per file, from its middle."""
    root = tmp_path / "music"
    left = utterance(1, rate=44100, seconds=3.0)
    ramp = np.linspace(0.5, 1.5, len(left))
    write(root / "a" / "wide.wav", np.stack([left, -0.5 * left * ramp], 1), rate=44100)
    write(root / "b" / "mono.wav", utterance(2, rate=48000, seconds=3.0), rate=48000)
    man = build(root, tmp_path / "set", rate=48000, segment_s=0.25, val_fraction=0.0,
                channels=2, min_rate=44100, max_file_s=1.0)  # fmt: skip
    assert man.channels == 2 and man.data["filters"]["music"]["kept"]["files"] == 2
    segs = SegmentDataset(man, "train")
    assert len(segs) == 8  # 1 s of each file: 4 segments of 0.25 s each
    first, mono = segs[1].numpy(), segs[5].numpy()
    assert first.shape == (2, 12000)
    ratio = -first[1] / np.where(np.abs(first[0]) > 1e-3, first[0], np.nan)
    # the 1 s from the middle of the 3 s file: the right/left gain is ~0.5 * ramp there (~1)
    assert 0.45 < np.nanmedian(ratio) < 0.55
    np.testing.assert_array_equal(mono[0], mono[1])
    with pytest.raises(CorpusError, match="channels"):
        build(root, tmp_path / "bad", channels=3)


def test_val_pieces_are_the_middle_of_long_validation_files(tmp_path: Path) -> None:
    """``--val-pieces`` writes the middle of every kept validation file long enough, resampled
    to the set's rate, and nothing from training or from short files."""
    root = tmp_path / "music"
    for i in range(4):
        write(root / f"long{i}.wav", utterance(i, rate=RATE_SRC, seconds=3.0))
    write(root / "short.wav", utterance(9, rate=RATE_SRC, seconds=1.0))
    man = build(root, tmp_path / "set", val_fraction=0.5)
    val = {f["path"] for f in man.data["files"] if f["split"] == "val"}
    out = tmp_path / "pieces"
    written = export_pieces(tmp_path / "set", out, seconds=1.0, min_seconds=2.0, progress=False)
    assert {p.name for p in written} == {f"music-{Path(v).stem}.flac" for v in val} - {
        "music-short.flac"
    }
    assert written, "the split must hold at least one long file"
    for path in written:
        y, sr = sf.read(path)
        src, _ = sf.read(root / f"{path.stem.removeprefix('music-')}.wav")
        assert sr == 16000 and len(y) == 16000
        whole = soxr.resample(src, RATE_SRC, 16000, quality="VHQ")
        np.testing.assert_allclose(y, whole[16000:32000], atol=1e-6)  # the middle second
    with pytest.raises(CorpusError, match="no kept val file of 5 s"):
        export_pieces(tmp_path / "set", out, min_seconds=5.0, progress=False)
    assert main(["--out", str(tmp_path / "set"), "--val-pieces", str(tmp_path / "cli")]) == 2
