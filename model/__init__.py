"""wavehost models: wavelet filter banks, streaming convolutions, the wavelet U-Net, export."""
