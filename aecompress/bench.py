"""``aecompress bench``: rate-distortion and speed of aecompress against classic codecs on a folder.

Each codec is run over a sweep of its quality setting on every image; the table gives, per
setting, the mean bpp (whole files), PSNR, MS-SSIM and encode/decode seconds per image, and each
codec's BD-rate against JPEG (PSNR and MS-SSIM in dB). The plot is drawn with Pillow alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from aecompress.evaluate import bd_rate, load_folder, mean, measure_aec, measure_pillow

CODECS = ("aec", "jpeg", "webp", "avif")
SETTINGS: dict[str, list[int]] = {
    "aec": [10, 20, 35, 50, 65, 75, 85, 95, 100],
    "jpeg": [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95],
    "webp": [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95],
    "avif": [10, 20, 30, 40, 50, 60, 70, 80, 90],
}
_PILLOW = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF"}
_COLOURS = {"aec": (214, 39, 40), "jpeg": (31, 119, 180), "webp": (44, 160, 44), "avif": (148, 103, 189)}


@dataclass
class Point:
    """One codec at one setting, averaged over the images."""

    codec: str
    setting: int
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float


@dataclass
class BenchResult:
    folder: str
    images: int
    points: dict[str, list[Point]] = field(default_factory=dict)
    bd_rate_psnr: dict[str, float | None] = field(default_factory=dict)
    bd_rate_ms_ssim: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "images": self.images,
            "points": {c: [asdict(p) for p in pts] for c, pts in self.points.items()},
            "bd_rate_vs_jpeg_psnr": self.bd_rate_psnr,
            "bd_rate_vs_jpeg_ms_ssim": self.bd_rate_ms_ssim,
        }


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM), where BD-rate is usually computed."""
    return -10 * math.log10(max(1 - value, 1e-10))


def _safe_bd(reference: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    try:
        return round(bd_rate(reference, test), 2)
    except ValueError:
        return None


def run(
    folder: Path,
    codecs: list[str],
    model: str | None = None,
    device: str = "cpu",
    settings: dict[str, list[int]] | None = None,
    progress: Callable[[str], None] | None = None,
    effort: int = 0,
    content: str = "auto",
) -> BenchResult:
    """Measure each codec over its settings on every image of a folder (aecompress at ``effort``,
    each image coded as the kind of picture ``content`` says)."""
    unknown = [c for c in codecs if c not in CODECS]
    if unknown:
        raise ValueError(f"unknown codec {unknown[0]!r} (choose from {', '.join(CODECS)})")
    images = load_folder(folder)
    if not images:
        raise ValueError(f"no images in {folder}")
    settings = {**SETTINGS, **(settings or {})}
    result = BenchResult(str(folder), len(images))
    if "aec" in codecs:  # load and warm the models
        measure_aec(*images[0], 75, model, device, with_ms_ssim=False, content=content)
    for codec in codecs:
        points = []
        for setting in settings[codec]:
            if progress:
                progress(f"{codec} {setting}")
            if codec == "aec":
                ms = [
                    measure_aec(name, img, setting, model, device, effort=effort, content=content)
                    for name, img in images
                ]
            else:
                ms = [measure_pillow(name, img, _PILLOW[codec], setting) for name, img in images]
            points.append(
                Point(
                    codec,
                    setting,
                    mean([m.bpp for m in ms]),
                    mean([m.psnr for m in ms]),
                    mean([m.ms_ssim for m in ms]),
                    mean([m.encode_s for m in ms]),
                    mean([m.decode_s for m in ms]),
                )
            )
        result.points[codec] = points
    if "jpeg" in result.points:
        ref = result.points["jpeg"]
        for codec, pts in result.points.items():
            result.bd_rate_psnr[codec] = _safe_bd(
                [(p.bpp, p.psnr) for p in ref], [(p.bpp, p.psnr) for p in pts]
            )
            result.bd_rate_ms_ssim[codec] = _safe_bd(
                [(p.bpp, ms_ssim_db(p.ms_ssim)) for p in ref], [(p.bpp, ms_ssim_db(p.ms_ssim)) for p in pts]
            )
    return result


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def table(result: BenchResult) -> str:
    """The result as a Markdown table, then the BD-rates."""
    lines = [
        f"{result.folder}: {result.images} images",
        "| codec | setting |   bpp | PSNR dB | MS-SSIM | encode s | decode s |",
        "|-------|--------:|------:|--------:|--------:|---------:|---------:|",
    ]
    for codec, pts in result.points.items():
        for p in pts:
            lines.append(
                f"| {codec:5} | {p.setting:7d} | {p.bpp:.3f} | {p.psnr:7.2f} | {p.ms_ssim:.4f} | "
                f"{p.encode_s:8.3f} | {p.decode_s:8.3f} |"
            )
    if result.bd_rate_psnr:
        lines += ["", "BD-rate against JPEG (negative: fewer bits at equal quality):"]
        for codec in result.points:
            psnr_bd = _percent(result.bd_rate_psnr.get(codec))
            ssim_bd = _percent(result.bd_rate_ms_ssim.get(codec))
            lines.append(f"  {codec:5} PSNR {psnr_bd:>8}   MS-SSIM {ssim_bd:>8}")
    return "\n".join(lines)


def plot(result: BenchResult, path: Path, width: int = 900, height: int = 600) -> None:
    """Rate-distortion curves (PSNR against bpp), one line per codec, as a PNG."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(14)
    left, right, top, bottom = 70, width - 20, 40, height - 60
    all_points = [p for pts in result.points.values() for p in pts]
    x_max = max(p.bpp for p in all_points) * 1.05
    y_lo = math.floor(min(p.psnr for p in all_points)) - 1
    y_hi = math.ceil(max(p.psnr for p in all_points)) + 1

    def xy(bpp: float, psnr: float) -> tuple[float, float]:
        return (left + (right - left) * bpp / x_max, bottom - (bottom - top) * (psnr - y_lo) / (y_hi - y_lo))

    draw.rectangle([left, top, right, bottom], outline="black")
    step = 0.25 if x_max <= 2 else 0.5
    tick = 0.0
    while tick <= x_max:
        x, _ = xy(tick, y_lo)
        draw.line([x, bottom, x, bottom + 5], fill="black")
        draw.text((x - 12, bottom + 8), f"{tick:.2f}", fill="black", font=font)
        tick += step
    for value in range(int(y_lo), int(y_hi) + 1, 2 if y_hi - y_lo > 12 else 1):
        _, y = xy(0, value)
        draw.line([left - 5, y, left, y], fill="black")
        draw.line([left, y, right, y], fill=(230, 230, 230))
        draw.text((left - 30, y - 8), str(value), fill="black", font=font)
    draw.text(((left + right) // 2 - 60, height - 30), "bits per pixel", fill="black", font=font)
    draw.text(
        (10, top - 30), f"PSNR (dB) on {result.folder} ({result.images} images)", fill="black", font=font
    )
    for i, (codec, pts) in enumerate(result.points.items()):
        colour = _COLOURS.get(codec, (0, 0, 0))
        line = [xy(p.bpp, p.psnr) for p in sorted(pts, key=lambda p: p.bpp)]
        draw.line(line, fill=colour, width=3)
        for x, y in line:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        bd = result.bd_rate_psnr.get(codec)
        label = codec if bd is None or codec == "jpeg" else f"{codec} ({bd:+.1f}% vs JPEG)"
        draw.line(
            [right - 230, bottom - 30 - 22 * i, right - 200, bottom - 30 - 22 * i], fill=colour, width=3
        )
        draw.text((right - 192, bottom - 38 - 22 * i), label, fill="black", font=font)
    img.save(path)
