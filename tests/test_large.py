"""Large images go through the tiled path end to end (memory is measured in benchmarks/)."""

from __future__ import annotations

import numpy as np
import pytest

from aecompress import codec
from aecompress import format as aecformat
from aecompress.imageio import ImageData


@pytest.mark.slow
def test_6000_by_4000_round_trip() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(125, 188, 3), dtype=np.uint8)
    rgb = np.kron(base, np.ones((32, 32, 1), dtype=np.uint8))[:4000, :6000]
    data = codec.encode(ImageData(rgb, None, "RGB"), device="cpu").data
    header = aecformat.unpack(data).header
    assert (header.width, header.height) == (6000, 4000)
    assert (header.latent_width, header.latent_height) == (375, 250)
    back = codec.decode(data, device="cpu")
    assert back.rgb.shape == (4000, 6000, 3)
