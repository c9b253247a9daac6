"""Rate-distortion measurement of aecompress and of classic codecs on a set of images.

Every rate counts whole files (the .aec header and chunks included), so the figures are what a user
sees on disk. JPEG is Pillow's, 4:2:0 with ``optimize=True``, the usual reference.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from aecompress import codec
from aecompress.imageio import IMAGE_SUFFIXES, ImageData, read_image
from aecompress.metrics import ms_ssim, psnr


@dataclass
class Measure:
    """One image coded at one setting."""

    image: str
    codec: str
    setting: float
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float


def load_folder(folder: Path) -> list[tuple[str, ImageData]]:
    """The images of a folder (not recursive), sorted by name."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p.name, read_image(p)) for p in paths]


def measure_aec(
    name: str,
    image: ImageData,
    quality: float,
    model: str | Path | None = None,
    device: str = "cpu",
    with_ms_ssim: bool = True,
    effort: int = 0,
    content: str = "auto",
) -> Measure:
    """Encode and decode one image with aecompress, timing both."""
    t0 = time.perf_counter()
    result = codec.encode(image, model, quality, device, effort=effort, content=content)
    t1 = time.perf_counter()
    back = codec.decode(result.data, device, model)
    t2 = time.perf_counter()
    n = image.width * image.height
    return Measure(
        name, "aec", quality, len(result.data), 8 * len(result.data) / n,
        psnr(image.rgb, back.rgb), ms_ssim(image.rgb, back.rgb) if with_ms_ssim else float("nan"),
        t1 - t0, t2 - t1,
    )  # fmt: skip


def measure_pillow(name: str, image: ImageData, fmt: str, quality: int, with_ms_ssim: bool = True) -> Measure:
    """Encode and decode one RGB image with a Pillow codec (JPEG 4:2:0 optimized, WebP, AVIF)."""
    pil = Image.fromarray(image.rgb, "RGB")
    options: dict[str, object] = {"quality": quality}
    if fmt == "JPEG":
        options.update(optimize=True, subsampling="4:2:0")
    elif fmt == "WEBP":
        options.update(method=6)
    buf = io.BytesIO()
    t0 = time.perf_counter()
    pil.save(buf, format=fmt, **options)
    t1 = time.perf_counter()
    data = buf.getvalue()
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    t2 = time.perf_counter()
    n = image.width * image.height
    return Measure(
        name, fmt.lower(), quality, len(data), 8 * len(data) / n, psnr(image.rgb, back),
        ms_ssim(image.rgb, back) if with_ms_ssim else float("nan"), t1 - t0, t2 - t1,
    )  # fmt: skip


def pillow_curve(
    name: str,
    image: ImageData,
    fmt: str = "JPEG",
    qualities: range = range(5, 96, 3),
    with_ms_ssim: bool = True,
) -> list[Measure]:
    """One image coded at many qualities of a Pillow codec, sorted by rate."""
    points = (measure_pillow(name, image, fmt, q, with_ms_ssim) for q in qualities)
    return sorted(points, key=lambda m: m.bpp)


def at_rate(curve: list[Measure], bpp: float) -> tuple[float, float]:
    """PSNR and MS-SSIM of a codec's curve at exactly ``bpp``, interpolated in log-rate
    (extrapolated from the nearest pair outside the curve's range)."""
    rates = np.log([m.bpp for m in curve])
    x = float(np.log(bpp))
    i = int(np.clip(np.searchsorted(rates, x), 1, len(curve) - 1))
    lo, hi = curve[i - 1], curve[i]
    t = (x - rates[i - 1]) / (rates[i] - rates[i - 1]) if rates[i] != rates[i - 1] else 0.0
    return lo.psnr + t * (hi.psnr - lo.psnr), lo.ms_ssim + t * (hi.ms_ssim - lo.ms_ssim)


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def bd_rate(reference: list[tuple[float, float]], test: list[tuple[float, float]]) -> float:
    """Bjøntegaard delta rate in percent: the average bitrate difference of ``test`` against
    ``reference`` at equal quality, over the quality range both curves cover.

    Points are (bpp, quality). Log-rate is fitted as a cubic in quality for each curve and the
    two fits are integrated over the common interval; negative means ``test`` needs fewer bits.
    """
    if len(reference) < 4 or len(test) < 4:
        raise ValueError("BD-rate needs at least four points per curve")
    r_rate, r_q = np.log([p[0] for p in reference]), np.array([p[1] for p in reference])
    t_rate, t_q = np.log([p[0] for p in test]), np.array([p[1] for p in test])
    lo, hi = max(r_q.min(), t_q.min()), min(r_q.max(), t_q.max())
    if hi <= lo:
        raise ValueError("the two curves share no quality range")
    r_fit, t_fit = np.polyfit(r_q, r_rate, 3), np.polyfit(t_q, t_rate, 3)
    r_int, t_int = np.polyint(r_fit), np.polyint(t_fit)
    r_avg = (np.polyval(r_int, hi) - np.polyval(r_int, lo)) / (hi - lo)
    t_avg = (np.polyval(t_int, hi) - np.polyval(t_int, lo)) / (hi - lo)
    return float((np.exp(t_avg - r_avg) - 1) * 100)
