"""wavehost's real-time host: rings, re-blocking, overlap-add, engine, plugin contract, I/O."""
