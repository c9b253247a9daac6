"""Defaults and safety limits shared by the library and the command line (no heavy imports here)."""

DEFAULT_QUALITY = 75  # -q when none is given: each model's trained step 1 (``latents.quality_to_step``)

# Pillow's own decompression-bomb threshold (it raises above twice MAX_IMAGE_PIXELS): about 179
# megapixels, a 16k x 11k photo. Reading and decoding both refuse more unless raised (--max-pixels).
DEFAULT_MAX_PIXELS = 2 * 89_478_485

GPU_BATCH = 16  # same-sized images through a GPU's networks together (on the CPU: one at a time)
