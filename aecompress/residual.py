"""A pixel residual over the decoded image: the fidelity the transforms cannot reach.

A member's transforms are undercomplete (100 latent channels for 192 or 768 pixel values), so on
drawn graphics, with one-pixel edges, halftone dots and fine stripes, their PSNR levels off at
28-36 dB however many bits the latents get. Past that point the difference between the
original and the decoded image, quantized with a step and stored beside the latents, buys far
more (docs/results.md, *A residual for the top end*).

The residual is plain int8 per pixel and channel in one zstd frame (the format's ``RESD``
chunk): zstd's matches find the repeats of drawn images, which a per-pixel class model
measured worse on. Parsing needs nothing the networks compute, so a file parses the same
everywhere; the image it restores moves with the decoder's floats, as the base image does.
"""

from __future__ import annotations

import numpy as np

from aecompress.coding import compress_payload
from aecompress.format import MAX_RESIDUAL_STEP, MIN_RESIDUAL_STEP, AecFile, ResidualChunk


def make(original: np.ndarray, decoded: np.ndarray, step: float) -> ResidualChunk:
    """The residual of ``decoded`` against ``original`` (both (H, W, 3) uint8), quantized with
    ``step`` (MIN_RESIDUAL_STEP..MAX_RESIDUAL_STEP pixel levels)."""
    if not MIN_RESIDUAL_STEP <= step <= MAX_RESIDUAL_STEP:
        raise ValueError(f"residual step {step} is outside {MIN_RESIDUAL_STEP:g}..{MAX_RESIDUAL_STEP:g}")
    step = float(np.float32(step))  # as the file stores it, so the encoder rounds as the decoder scales
    quantized = np.empty(original.shape, np.int8)
    for rows in _bands(original.shape[0]):
        diff = original[rows].astype(np.float32) - decoded[rows].astype(np.float32)
        quantized[rows] = np.clip(np.rint(diff / np.float32(step)), -127, 127)
    return ResidualChunk(step, compress_payload(quantized.tobytes()))


def apply(decoded: np.ndarray, aec: AecFile) -> np.ndarray:
    """The decoded image with the file's residual added (the image itself when it has none)."""
    values = aec.residual_array()
    if values is None or aec.residual is None:
        return decoded
    step = np.float32(aec.residual.step)
    out = np.empty(decoded.shape, np.uint8)
    for rows in _bands(decoded.shape[0]):
        restored = decoded[rows].astype(np.float32) + values[rows].astype(np.float32) * step
        out[rows] = np.clip(np.rint(restored), 0, 255)
    return out


BAND_ROWS = 256  # rows at a time: the float scratch of a 6000-pixel-wide image stays near 18 MB


def _bands(height: int) -> list[slice]:
    return [slice(top, min(top + BAND_ROWS, height)) for top in range(0, height, BAND_ROWS)]
