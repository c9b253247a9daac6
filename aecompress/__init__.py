"""aecompress: a learned image codec whose latents are quantized and zstd-packed into .aec files."""

__version__ = "0.1.0"
