"""gen_synth: pixel-synthesis GANs (CREPS, PixelFolder, CIPS) in JAX/Flax."""

__version__ = "0.1.0"
