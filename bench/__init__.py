"""wavehost's benchmark harness: per-block latency, end-to-end latency through an audio server,
quality against baselines, and interleaved comparisons; JSON + markdown + PNG reports.

Entry point: ``wavehost bench latency | e2e | quality | compare`` (:mod:`bench.cli`).
"""
