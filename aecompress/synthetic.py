"""Generated images of the kinds photos do not teach a codec: screens and documents, slides,
comics and patterns (flat fills, hard edges, text, repetition).

BSDS500 holds natural photos only, and the codec trained on it is weakest on exactly these kinds
of image. Each image here is a pure function of (kind, seed, size), drawn with Pillow, so training
can mix them into its samples (``aecompress train --synthetic``) without any file to ship or
licence to check, and a held-out set is just other seeds.
"""

from __future__ import annotations

import math
import random
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("screen", "slide", "comic", "pattern")

_TEXT = (
    "the quick brown fox jumps over a lazy dog settings file edit view help save open close window "
    "tools image codec latent entropy quality bytes pixels results summary agenda next steps why how "
    "0123456789 2026 OK Cancel Apply Q3 +12% WOW! no way... really?"
)
_WORDS = _TEXT.split()

Colour = tuple[int, int, int]


def render(kind: str, seed: int, width: int, height: int) -> np.ndarray:
    """One generated image (H, W, 3) uint8 of the given kind (one of ``KINDS``)."""
    draw_kind = {"screen": _screen, "slide": _slide, "comic": _comic, "pattern": _pattern}.get(kind)
    if draw_kind is None:
        raise ValueError(f"unknown synthetic kind {kind!r} (one of {', '.join(KINDS)})")
    rng = random.Random(f"{kind}:{seed}")
    img = Image.new("RGB", (width, height))
    draw_kind(img, rng)
    return np.asarray(img, dtype=np.uint8).copy()


def render_any(seed: int, width: int, height: int) -> np.ndarray:
    """An image of a kind chosen by the seed (the kinds in equal shares)."""
    return render(KINDS[random.Random(seed).randrange(len(KINDS))], seed, width, height)


def _between(rng: random.Random, lo: int, hi: int) -> int:
    """A random integer in [lo, hi), or lo where the image is too small for the range."""
    return rng.randrange(lo, hi) if hi > lo else lo


def _colour(rng: random.Random, lo: int = 0, hi: int = 255) -> Colour:
    return (rng.randrange(lo, hi + 1), rng.randrange(lo, hi + 1), rng.randrange(lo, hi + 1))


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at a size, loaded once (a page draws dozens of lines)."""
    return ImageFont.load_default(size)


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randrange(lo, hi + 1)))


def _on(bg: Colour) -> Colour:
    """A text colour that reads on ``bg``."""
    return (20, 20, 20) if sum(bg) > 380 else (235, 235, 235)


def _gradient(img: Image.Image, a: Colour, b: Colour, angle: float) -> None:
    w, h = img.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    pixels = np.asarray(a, np.float32) * (1 - t[..., None]) + np.asarray(b, np.float32) * t[..., None]
    img.paste(Image.fromarray(pixels.round().astype(np.uint8)))


def _screen(img: Image.Image, rng: random.Random) -> None:
    """A window or document page: a title bar, lines of text, buttons and rules."""
    w, h = img.size
    bg = rng.choice([(255, 255, 255), (245, 245, 245), (30, 30, 36), (250, 248, 240), _colour(rng, 200)])
    fg = _on(bg)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, w, h], fill=bg)
    y = 4
    if rng.random() < 0.7:
        bar = _colour(rng, 40, 200)
        draw.rectangle([0, 0, w, 22], fill=bar)
        draw.text((6, 4), _words(rng, 2, 4), fill=(255, 255, 255), font=_font(13))
        y = 30
    while y < h - 12:
        kind = rng.random()
        size = rng.choice([10, 12, 14, 16, 20, 28])
        if kind < 0.6:
            colour = fg if rng.random() < 0.8 else _colour(rng)
            draw.text((rng.randrange(4, 30), y), _words(rng, 3, 12), fill=colour, font=_font(size))
            y += size + rng.randrange(2, 8)
        elif kind < 0.85:
            x0 = rng.randrange(4, max(5, w // 2))
            bw, bh = rng.randrange(40, max(41, w // 2)), rng.randrange(16, 40)
            draw.rounded_rectangle([x0, y, x0 + bw, y + bh], radius=4, fill=_colour(rng, 60, 250), outline=fg)
            draw.text((x0 + 6, y + 3), rng.choice(_WORDS), fill=fg, font=_font(12))
            y += bh + 6
        else:
            draw.line([0, y, w, y], fill=fg, width=1)
            y += 6


def _slide(img: Image.Image, rng: random.Random) -> None:
    """A presentation slide: a flat or graded background, a title, bullets, a bar chart or shapes."""
    w, h = img.size
    a, b = _colour(rng), _colour(rng)
    if rng.random() < 0.5:
        _gradient(img, a, b, rng.uniform(0, math.pi))
    else:
        img.paste(a, (0, 0, w, h))
    fg = _on(a)
    draw = ImageDraw.Draw(img)
    title = max(16, h // 10)
    draw.text((w // 20, h // 20), _words(rng, 2, 5), fill=fg, font=_font(title))
    y = h // 20 + title + title // 2
    for _ in range(rng.randrange(2, 6)):
        size = max(10, h // 22)
        draw.ellipse([w // 20, y + size // 3, w // 20 + size // 2, y + size // 3 + size // 2], fill=fg)
        draw.text((w // 20 + size, y), _words(rng, 3, 8), fill=fg, font=_font(size))
        y += int(size * 1.6)
    left, bottom = w // 2, h - h // 12
    if rng.random() < 0.6:  # a bar chart
        bars = rng.randrange(3, 8)
        span = max(7, (w - left - w // 20) // bars)
        draw.line([left, bottom, w - w // 20, bottom], fill=fg, width=2)
        for i in range(bars):
            top = bottom - _between(rng, h // 10, h // 2)
            draw.rectangle(
                [left + i * span + 3, min(top, bottom), left + (i + 1) * span - 3, bottom], fill=_colour(rng)
            )
    else:
        for _ in range(rng.randrange(2, 6)):
            x0, y0 = _between(rng, left, w - 10), _between(rng, h // 3, h - 10)
            r = rng.randrange(8, max(9, h // 6))
            box = [x0 - r, y0 - r, x0 + r, y0 + r]
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(
                box, fill=_colour(rng), outline=fg, width=2
            )


def _comic(img: Image.Image, rng: random.Random) -> None:
    """Comic panels: flat colours in thick black outlines, halftone dots, speech balloons."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, w, h], fill=(250, 250, 245))
    cols, rows = rng.randrange(1, 4), rng.randrange(1, 3)
    gap, line = max(4, w // 80), max(2, w // 200)
    for r in range(rows):
        for c in range(cols):
            x0, y0 = c * w // cols + gap, r * h // rows + gap
            x1, y1 = (c + 1) * w // cols - gap, (r + 1) * h // rows - gap
            if x1 - x0 < 20 or y1 - y0 < 20:
                continue
            draw.rectangle([x0, y0, x1, y1], fill=_colour(rng, 120), outline=(0, 0, 0), width=line + 1)
            if rng.random() < 0.5:  # halftone dots over part of the panel
                dot, pitch = rng.randrange(1, 4), rng.randrange(5, 10)
                ink = _colour(rng, 0, 160)
                for yy in range(y0 + pitch, y1 - pitch, pitch):
                    for xx in range(x0 + pitch + (yy // pitch % 2) * pitch // 2, (x0 + x1) // 2, pitch):
                        draw.ellipse([xx - dot, yy - dot, xx + dot, yy + dot], fill=ink)
            for _ in range(rng.randrange(1, 5)):  # figures: outlined flat shapes
                cx, cy = rng.randrange(x0, x1), rng.randrange(y0, y1)
                rx, ry = rng.randrange(5, max(6, (x1 - x0) // 3)), rng.randrange(5, max(6, (y1 - y0) // 3))
                points = [
                    (
                        cx + rx * math.cos(t) * rng.uniform(0.6, 1.0),
                        cy + ry * math.sin(t) * rng.uniform(0.6, 1.0),
                    )
                    for t in np.linspace(0, 2 * math.pi, rng.randrange(3, 9), endpoint=False)
                ]
                draw.polygon(points, fill=_colour(rng), outline=(0, 0, 0), width=line)
            if rng.random() < 0.7:  # a speech balloon
                bw, bh = max(30, (x1 - x0) // 2), max(16, (y1 - y0) // 4)
                bx, by = rng.randrange(x0, max(x0 + 1, x1 - bw)), y0 + gap
                draw.ellipse([bx, by, bx + bw, by + bh], fill=(255, 255, 255), outline=(0, 0, 0), width=line)
                draw.text((bx + bw // 6, by + bh // 4), _words(rng, 1, 3).upper(), fill=(0, 0, 0),
                          font=_font(max(9, bh // 3)))  # fmt: skip


def _pattern(img: Image.Image, rng: random.Random) -> None:
    """Repetition: stripes, checks, dots or gratings, one to four regions."""
    w, h = img.size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    regions = rng.randrange(1, 5)
    cut = sorted(rng.randrange(0, w) for _ in range(regions - 1))
    edges = [0, *cut, w]
    for i in range(regions):
        a, b = np.asarray(_colour(rng), np.float32), np.asarray(_colour(rng), np.float32)
        period = rng.uniform(3, 40)
        angle = rng.uniform(0, math.pi)
        u = xx * math.cos(angle) + yy * math.sin(angle)
        v = -xx * math.sin(angle) + yy * math.cos(angle)
        style = rng.randrange(4)
        if style == 0:  # stripes
            t = (np.floor(u / period) % 2).astype(np.float32)
        elif style == 1:  # checks
            t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
        elif style == 2:  # dots
            du, dv = (u % period) - period / 2, (v % period) - period / 2
            t = (du * du + dv * dv < (period * rng.uniform(0.15, 0.45)) ** 2).astype(np.float32)
        else:  # a smooth grating
            t = 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
        band = slice(edges[i], edges[i + 1])
        out[:, band] = (a * (1 - t[..., None]) + b * t[..., None])[:, band]
    img.paste(Image.fromarray(out.round().clip(0, 255).astype(np.uint8)))
