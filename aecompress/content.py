"""What kind of picture an image is, so a family can serve it with members trained for its kind.

Drawn graphics (screens, documents, slides, comics, patterns) repeat pixels exactly: flat fills,
lines and text leave most pixels equal to their left neighbour (a median of 94% on the held-out
generated images of ``benchmarks/synthetic_set.py``), where camera noise leaves a photo few (6.8%
on BSDS500's validation photos, at most 46% on all 500). Saved as JPEG, graphics lose that and
count as photos, which is where the photo members do well anyway. The tell is cheap: one
comparison a pixel over at most about a quarter of a million (under a millisecond for a Kodak image).
"""

from __future__ import annotations

import numpy as np

from aecompress.errors import ModelError
from aecompress.family import PHOTO, Family

AUTO = "auto"  # choose per image
SAMPLE_PIXELS = 1 << 18  # flat_share looks at every k-th row of a larger image


def flat_share(rgb: np.ndarray) -> float:
    """The share of pixels equal, in all three channels, to their left neighbour."""
    height, width = rgb.shape[:2]
    if width < 2 or height < 1:
        return 0.0
    rows = rgb[:: max(1, height * width // SAMPLE_PIXELS)].astype(np.int32)
    packed = rows[..., 0] | rows[..., 1] << 8 | rows[..., 2] << 16  # one comparison a pixel
    return float(np.count_nonzero(packed[:, 1:] == packed[:, :-1])) / (packed.shape[0] * (width - 1))


def kind_of(rgb: np.ndarray, family: Family | None, content: str = AUTO) -> str:
    """The kind of picture to code an image as: ``content`` when it names one the family has,
    else (``auto``) the first variant whose flatness the image reaches, else photo.

    A single model (``family`` None) serves every kind; naming one it has no members for is an
    error, so a typo in ``--content`` is not silently ignored.
    """
    kinds = family.kinds() if family is not None else [PHOTO]
    if content != AUTO:
        if content not in kinds:
            what = f"family {family.name!r}" if family is not None else "a single model"
            raise ModelError(f"--content {content}: {what} has members for {', '.join(kinds)} only")
        return content
    if family is None or not family.variants:
        return PHOTO
    share = flat_share(rgb)
    return next((v.kind for v in family.variants if share >= v.flat_share), PHOTO)
