"""Safety limits shared by the reader, the decoder and the command line (no heavy imports here)."""

# Pillow's own decompression-bomb threshold (it raises above twice MAX_IMAGE_PIXELS): about 179
# megapixels, a 16k x 11k photo. Reading and decoding both refuse more unless raised (--max-pixels).
DEFAULT_MAX_PIXELS = 2 * 89_478_485
