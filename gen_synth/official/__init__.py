"""Readers and name tables for the official PyTorch checkpoints (CREPS, PixelFolder, CIPS)."""
