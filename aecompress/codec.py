"""Image <-> .aec bytes: padding, tiled encoder/decoder passes, quantization and packing.

Large images are coded in tiles of the latent grid, each run with enough surrounding context that
the kept part matches a whole-image pass; memory stays bounded by the tile size, not the image.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aecompress import format as aecformat
from aecompress.device import autocast, select_device
from aecompress.errors import AecError, FormatError
from aecompress.family import Family, find_family
from aecompress.imageio import ImageData, check_pixels
from aecompress.latents import DEFAULT_QUALITY, coder_for, quality_to_step
from aecompress.limits import DEFAULT_MAX_PIXELS
from aecompress.metrics import psnr
from aecompress.modelfile import ModelInfo, find_for_file, load_model, resolve
from aecompress.nn import LatentCodec
from aecompress.refine import refine

TILE_PIXELS = 1024  # side of a tile in image pixels: 64 latents at stride 16, 128 at stride 8


_on_device: dict[tuple[str, str], LatentCodec] = {}


def model_on(path: Path, device: torch.device) -> tuple[LatentCodec, ModelInfo]:
    """A loaded model placed on a device (kept for reuse across files in one process)."""
    model, info = load_model(path)
    if device.type == "cpu":
        return model, info
    key = (str(Path(path).resolve()), str(device))
    if key not in _on_device:
        _on_device[key] = copy.deepcopy(model).to(device)
    return _on_device[key], info


def tile_latents(model: LatentCodec, tile: int | None) -> int:
    """Latents per tile side: ``tile`` when given, else what covers TILE_PIXELS at the model's
    stride. Sizing tiles in pixels keeps peak memory the same for every stride, and spares
    stride-8 models the seams (each with its context recomputed) of a Kodak-sized image."""
    return tile if tile else max(1, TILE_PIXELS // model.stride)


def _tiles(length: int, tile: int) -> Iterator[tuple[int, int]]:
    for start in range(0, length, tile):
        yield start, min(start + tile, length)


def _image_tensor(padded: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(padded)).to(device)
    t = t.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    return t.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def analyse(
    model: LatentCodec, rgb: np.ndarray, device: torch.device, tile: int | None = None
) -> torch.Tensor:
    """Float latents (C, Lh, Lw) of an (H, W, 3) uint8 image, edge-padded to the stride, tiled."""
    s = model.stride
    h, w = rgb.shape[:2]
    lh, lw = -(-h // s), -(-w // s)
    padded = np.pad(rgb, ((0, lh * s - h), (0, lw * s - w), (0, 0)), mode="edge")
    ctx = model.encoder_context
    tile = tile_latents(model, tile)
    out = torch.empty(model.latent_channels, lh, lw)
    for y0, y1 in _tiles(lh, tile):
        for x0, x1 in _tiles(lw, tile):
            py0, py1 = max(0, y0 * s - ctx), min(lh * s, y1 * s + ctx)
            px0, px1 = max(0, x0 * s - ctx), min(lw * s, x1 * s + ctx)
            with autocast(device):
                y = model.encode(_image_tensor(padded[py0:py1, px0:px1], device))[0]
            oy, ox = (y0 * s - py0) // s, (x0 * s - px0) // s
            out[:, y0:y1, x0:x1] = y[:, oy : oy + y1 - y0, ox : ox + x1 - x0].float().cpu()
    return out


@torch.inference_mode()
def synthesize(
    model: LatentCodec,
    latents: torch.Tensor,
    size: tuple[int, int],
    device: torch.device,
    tile: int | None = None,
) -> np.ndarray:
    """Dequantized latents (C, Lh, Lw) -> (H, W, 3) uint8 image cropped to size (H, W), tiled."""
    s = model.stride
    _, lh, lw = latents.shape
    h, w = size
    ctx = model.decoder_context
    tile = tile_latents(model, tile)
    out = np.empty((lh * s, lw * s, 3), dtype=np.uint8)
    for y0, y1 in _tiles(lh, tile):
        for x0, x1 in _tiles(lw, tile):
            ly0, ly1 = max(0, y0 - ctx), min(lh, y1 + ctx)
            lx0, lx1 = max(0, x0 - ctx), min(lw, x1 + ctx)
            part = latents[:, ly0:ly1, lx0:lx1].unsqueeze(0).to(device)
            part = part.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                decoded = model.decode(part)[0]
            img = decoded.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
            oy, ox = (y0 - ly0) * s, (x0 - lx0) * s
            crop = img[:, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
            out[y0 * s : y1 * s, x0 * s : x1 * s] = crop.permute(1, 2, 0).cpu().numpy()
    return out[:h, :w]


@dataclass
class EncodeResult:
    data: bytes
    header: aecformat.AecHeader
    device: torch.device


def encode_with(
    net: LatentCodec,
    name: str,
    digest: bytes,
    image: ImageData,
    quality: float = DEFAULT_QUALITY,
    device: torch.device | None = None,
    tile: int | None = None,
    effort: int = 0,
    label: float | None = None,
) -> tuple[bytes, aecformat.AecHeader]:
    """Compress an image with a network in hand (also used by training's validation).

    ``quality`` is this network's own -q; ``label`` is the -q the user asked for, which the
    header records (they differ when a family member serves the request). ``effort`` is the
    number of refinement iterations (``aecompress.refine``); 0 is the encoder's single pass.
    """
    dev = device or torch.device("cpu")
    latents = analyse(net, image.rgb, dev, tile)
    latents = refine(net, latents, image.rgb, coder_for(net).grid(net, quality), effort, dev)  # 0: unchanged
    return pack_latents(net, name, digest, image, latents, quality, label)


def pack_latents(
    net: LatentCodec,
    name: str,
    digest: bytes,
    image: ImageData,
    latents: torch.Tensor,
    quality: float,
    label: float | None = None,
) -> tuple[bytes, aecformat.AecHeader]:
    """Quantize at the network's own ``quality`` and pack, recording ``label`` (the asked -q)."""
    coded = coder_for(net).code(net, latents, quality)
    c, lh, lw = latents.shape
    header = aecformat.AecHeader(
        width=image.width,
        height=image.height,
        mode=image.mode,
        source_mode=image.source_mode or image.mode,
        source_bits=image.source_bits,
        quality=round(quality if label is None else label),
        model_name=name,
        model_hash=digest,
        stride=net.stride,
        channels=c,
        latent_height=lh,
        latent_width=lw,
        dtype=coded.dtype,
        step=coded.step,
    )
    data = aecformat.pack(header, coded.tensors, image.alpha, image.icc, image.exif, coded.order)
    return data, header


def pick_model(model: str | Path | None, quality: float) -> tuple[Path, float]:
    """The model file and its own quality for a --model value and -q (a family picks a member).

    Without an image at hand a family's size-matched hand-overs take their calibrated starts;
    encoding places each image's own (``Placer``).
    """
    family = find_family(model)
    if family is not None:
        return family.pick(quality)
    quality_to_step(quality)  # range check
    return resolve(model), quality


MATCH_TOLERANCE = 0.01  # a matched start is searched until its estimate is this close to the goal
MATCH_TRIES = 6  # at most this many estimates to find one matched start
MATCH_SLOPE = 0.032  # d log(file size) / d quality for the search's first step (the bundled stride-8
# member at its -q 25-50: 0.031-0.033 on average over the calibration images)


class Placer:
    """One image's files at any global -q, with each model's analysis run once.

    A family that hands over by size (``Family.match``) starts each member after the first, for
    this image, at the quality where its coded latents are ``match`` times the previous member's
    at its top: found once per member, from the coder's estimates (``LatentCoder.estimate``) at
    the previous member's top and a few of its own qualities. A member with a ``TopRule`` tops
    out, for this image, where the estimated rate at its nominal top puts it.
    """

    def __init__(
        self,
        model: str | Path | None,
        image: ImageData,
        device: torch.device,
        tile: int | None = None,
        family: Family | None = None,
    ) -> None:
        self.family = family if family is not None else find_family(model)
        self.alone = None if self.family is not None else resolve(model)
        self.image, self.device, self.tile = image, device, tile
        self.latents: dict[Path, torch.Tensor] = {}
        self.starts: dict[int, float] = {}
        self.tops: dict[int, float] = {}
        self.estimates: dict[tuple[Path, float], float] = {}

    def needs(self, quality: float) -> list[Path]:
        """The models whose analysis of the image placing ``quality`` takes."""
        if self.family is None:
            assert self.alone is not None
            return [self.alone]
        index, _ = self.family.slot(quality)
        first = index - 1 if self.family.match is not None and index > 0 else index
        return [self.family.model_path(m) for m in self.family.members[first : index + 1]]

    def place(self, quality: float) -> tuple[Path, float]:
        """The model file and its own quality serving a global quality for this image."""
        if self.family is None:
            assert self.alone is not None
            quality_to_step(quality)  # range check
            return self.alone, quality
        index, t = self.family.slot(quality)
        start = self.start(index) if self.family.match is not None and index > 0 else None
        local = self.family.local(index, t, start, self.top(index))
        return self.family.model_path(self.family.members[index]), local

    def analysis(self, path: Path) -> torch.Tensor:
        """The model's float latents of the image (computed on first use)."""
        if path not in self.latents:
            net, _ = model_on(path, self.device)
            self.latents[path] = analyse(net, self.image.rgb, self.device, self.tile)
        return self.latents[path]

    def pack(self, quality: float) -> _Packed:
        """The file at a global quality."""
        return self.pack_own(*self.place(quality), quality)

    def pack_own(self, path: Path, local: float, label: float) -> _Packed:
        """The file a model makes at its own quality ``local``, recording ``label`` as the -q."""
        net, info = model_on(path, self.device)
        latents = self.analysis(path)
        data, header = pack_latents(net, info.name, info.weights_hash, self.image, latents, local, label)
        return _Packed(data, header, path, local)

    def estimate(self, path: Path, local: float) -> float:
        """About how many bytes the model's coded latents take at its own quality ``local``."""
        if (path, local) not in self.estimates:
            net, _ = model_on(path, self.device)
            self.estimates[path, local] = max(coder_for(net).estimate(net, self.analysis(path), local), 1.0)
        return self.estimates[path, local]

    def top(self, index: int) -> float:
        """Member ``index``'s own top quality for this image (``TopRule``: from the estimated
        rate at its nominal top)."""
        assert self.family is not None
        member = self.family.members[index]
        nominal = member.local_quality[1]
        if member.top_by_rate is None:
            return nominal
        if index not in self.tops:
            size = self.estimate(self.family.model_path(member), nominal)
            bpp = 8 * size / (self.image.width * self.image.height)
            self.tops[index] = member.top_by_rate.top(nominal, bpp)
        return self.tops[index]

    def start(self, index: int) -> float:
        """Member ``index``'s own quality where it takes over for this image (matched by size)."""
        if index not in self.starts:
            family = self.family
            assert family is not None and family.match is not None and index > 0
            before, member = family.members[index - 1], family.members[index]
            top = self.estimate(family.model_path(before), self.top(index - 1))
            goal = math.log(family.match * top)
            path = family.model_path(member)

            def log_size(q: float) -> float:
                return math.log(self.estimate(path, q))

            self.starts[index] = _solve(log_size, goal, member.local_quality[0], member.local_quality[1])
        return self.starts[index]


def _solve(f: Callable[[float], float], goal: float, guess: float, top: float) -> float:
    """A quality in [0, top] where the increasing ``f`` is near ``goal``: secant steps from
    ``guess``, kept inside the bracket found so far (an end of the range is tried once when a
    step passes it; otherwise the bracket is halved)."""
    lo, hi = 0.0, top
    tried: list[tuple[float, float]] = []
    q = min(max(guess, lo), hi)
    for _ in range(MATCH_TRIES):
        value = f(q)
        tried.append((q, value))
        if abs(value - goal) <= math.log1p(MATCH_TOLERANCE):
            break
        if value < goal:
            lo = q
        else:
            hi = q
        if (value < goal and q >= top) or (value > goal and q <= 0.0):
            break  # the goal is out of this member's reach: its nearest end it is
        if len(tried) == 1:
            step = (goal - value) / MATCH_SLOPE
        else:
            (q0, v0), (q1, v1) = tried[-2], tried[-1]
            step = (goal - v1) * (q1 - q0) / (v1 - v0) if v1 != v0 else math.inf
        q = q + step
        if q >= hi:
            q = top if hi == top and top not in (t for t, _ in tried) else (lo + hi) / 2
        elif q <= lo:
            q = 0.0 if lo == 0.0 and 0.0 not in (t for t, _ in tried) else (lo + hi) / 2
    return min(tried, key=lambda qv: abs(qv[1] - goal))[0]


def encode_to_size(
    image: ImageData,
    target_bpp: float,
    model: str | Path | None = None,
    device: str = "auto",
    tile: int | None = None,
    effort: int = 0,
) -> EncodeResult:
    """Compress at the highest quality whose whole file stays at or under ``target_bpp``.

    Each model runs its encoder once (a family may use more than one); only quantization and
    packing repeat, in a bisection over the continuous quality. When even quality 0 is larger,
    that smallest file is returned. Where a family's members hand over at a fixed -q (not
    matched by size), the file jumps in size, and a target inside that jump would land well
    under it: there both members are pushed past their share of -q to the target, and the one
    that decodes to the higher PSNR is kept. With ``effort``, the chosen quality is then
    refined, and kept unrefined if refinement would cross the target.
    """
    dev = select_device(device)
    placer = Placer(model, image, dev, tile)
    budget = target_bpp * image.width * image.height / 8
    lo, hi, best = _fit(placer.pack, 0.0, 100.0, budget)
    jumps = placer.family is not None and placer.family.match is None  # hand-overs fixed in -q
    if jumps and len(best.data) <= budget and hi > lo:
        (low_path, low_local), (high_path, high_local) = placer.place(lo), placer.place(hi)
        if low_path != high_path:
            up = _fit(lambda q: placer.pack_own(low_path, q, lo), low_local, 100.0, budget)[2]
            down = _fit(lambda q: placer.pack_own(high_path, q, lo), 0.0, high_local, budget)[2]
            fitting = [c for c in (best, up, down) if len(c.data) <= budget]
            best = max(fitting, key=lambda c: _psnr_of(c, image, dev))
    if effort > 0:
        net, info = model_on(best.path, dev)
        better = refine(
            net, placer.analysis(best.path), image.rgb, coder_for(net).grid(net, best.local), effort, dev
        )
        data, header = pack_latents(
            net, info.name, info.weights_hash, image, better, best.local, best.header.quality
        )
        if len(data) <= budget:
            return EncodeResult(data, header, dev)
    return EncodeResult(best.data, best.header, dev)


@dataclass
class _Packed:
    data: bytes
    header: aecformat.AecHeader
    path: Path  # the model file that made it
    local: float  # that model's own quality


def _fit(
    pack: Callable[[float], _Packed], lo: float, hi: float, budget: float
) -> tuple[float, float, _Packed]:
    """Bisect [lo, hi] for the highest quality whose file fits ``budget``.

    Returns the final bracket (the fitting quality, the nearest one above that did not fit)
    and the file at the first; when even ``lo`` does not fit, its file with the bracket (lo, lo).
    """
    best = pack(lo)
    if len(best.data) > budget:
        return lo, lo, best
    top = pack(hi)
    if len(top.data) <= budget:
        return hi, hi, top
    while hi - lo > 100 / 2**14:
        mid = (lo + hi) / 2
        candidate = pack(mid)
        if len(candidate.data) <= budget:
            lo, best = mid, candidate
        else:
            hi = mid
    return lo, hi, best


def _psnr_of(packed: _Packed, image: ImageData, device: torch.device) -> float:
    net, _ = model_on(packed.path, device)
    return psnr(image.rgb, decode_with(net, aecformat.unpack(packed.data), device).rgb)


def encode(
    image: ImageData,
    model: str | Path | None = None,
    quality: float = DEFAULT_QUALITY,
    device: str = "auto",
    tile: int | None = None,
    effort: int = 0,
) -> EncodeResult:
    """Compress an image into .aec bytes with the given model (name, path or family) and quality.

    ``effort`` > 0 refines the latents with that many decoder passes (slower, better).
    """
    dev = select_device(device)
    placer = Placer(model, image, dev, tile)
    path, local = placer.place(quality)
    net, info = model_on(path, dev)
    latents = refine(net, placer.analysis(path), image.rgb, coder_for(net).grid(net, local), effort, dev)
    data, header = pack_latents(net, info.name, info.weights_hash, image, latents, local, quality)
    return EncodeResult(data, header, dev)


def encode_many(
    images: list[ImageData],
    model: str | Path | None = None,
    quality: float = DEFAULT_QUALITY,
    device: str = "auto",
    batch: int = 16,
    tile: int | None = None,
    effort: int = 0,
) -> list[EncodeResult]:
    """Compress several images, running same-sized ones through the encoder as one batch.

    Batching pays on a GPU, where one image leaves most of the device idle. Images larger than
    one tile take the tiled path one by one. Results come back in the order of ``images``.
    """
    quality_to_step(quality)  # range check, before any work
    dev = select_device(device)
    family = find_family(model)
    placers = [Placer(model, image, dev, tile, family) for image in images]
    if not placers:
        return []
    for path in placers[0].needs(quality):  # the same models for every image
        net, _ = model_on(path, dev)
        groups: dict[tuple[int, int], list[int]] = {}
        s, side = net.stride, tile_latents(net, tile)
        for index, image in enumerate(images):
            if -(-image.height // s) <= side and -(-image.width // s) <= side:
                groups.setdefault((image.height, image.width), []).append(index)
        for indices in groups.values():
            for first in range(0, len(indices), batch):
                chunk = indices[first : first + batch]
                stack = _analyse_stack(net, [images[i].rgb for i in chunk], dev)
                for index, y in zip(chunk, stack, strict=True):
                    placers[index].latents[path] = y
    results = []
    for image, placer in zip(images, placers, strict=True):
        path, local = placer.place(quality)  # larger images are analysed here, one by one
        net, info = model_on(path, dev)
        y = refine(net, placer.analysis(path), image.rgb, coder_for(net).grid(net, local), effort, dev)
        data, header = pack_latents(net, info.name, info.weights_hash, image, y, local, quality)
        results.append(EncodeResult(data, header, dev))
    return results


@torch.inference_mode()
def _analyse_stack(net: LatentCodec, rgbs: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Latents of same-sized images that each fit one tile, in one encoder pass."""
    s = net.stride
    h, w = rgbs[0].shape[:2]
    pad = ((0, -(-h // s) * s - h), (0, -(-w // s) * s - w), (0, 0))
    batch = torch.cat([_image_tensor(np.pad(rgb, pad, mode="edge"), device) for rgb in rgbs])
    with autocast(device):
        y = net.encode(batch.contiguous(memory_format=torch.channels_last)).float().cpu()
    return list(y)


def decode_many(
    datas: list[bytes],
    device: str = "auto",
    model: str | Path | None = None,
    batch: int = 16,
    tile: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    near: Sequence[Path] = (),
) -> list[ImageData | AecError]:
    """Restore several files, running same-shaped latents of one model through the decoder together.

    The GPU counterpart of ``encode_many``. A file that cannot be decoded yields its error in
    its place, so one bad file does not stop the others.
    """
    dev = select_device(device)
    out: list[ImageData | AecError | None] = [None] * len(datas)
    groups: dict[tuple[Path, int, int, int], list[tuple[int, aecformat.AecFile]]] = {}
    for index, data in enumerate(datas):
        try:
            aec = aecformat.unpack(data)
            h = aec.header
            check_pixels(h.width, h.height, max_pixels, "the image in this file")
            path = find_for_file(h.model_name, h.model_hash, _preferred(model, h.model_name), near)
            net, _ = model_on(path, dev)
            side = tile_latents(net, tile)
            if h.latent_height <= side and h.latent_width <= side:
                groups.setdefault((path, h.channels, h.latent_height, h.latent_width), []).append(
                    (index, aec)
                )
            else:
                out[index] = decode_with(net, aec, dev, tile)
        except AecError as exc:
            out[index] = exc
    for (path, _, _, _), members in groups.items():
        net, _ = model_on(path, dev)
        for first in range(0, len(members), batch):
            chunk = members[first : first + batch]
            images: list[ImageData | AecError]
            try:
                images = list(_synthesize_stack(net, [aec for _, aec in chunk], dev))
            except AecError as exc:
                images = [exc] * len(chunk)
            for (index, _), image in zip(chunk, images, strict=True):
                out[index] = image
    return [item if item is not None else FormatError("not decoded") for item in out]


@torch.inference_mode()
def _synthesize_stack(
    net: LatentCodec, files: list[aecformat.AecFile], device: torch.device
) -> list[ImageData]:
    """Decode files whose latents share one shape, in one decoder pass."""
    for aec in files:
        if net.stride != aec.header.stride or net.latent_channels != aec.header.channels:
            raise FormatError(f"latent layout does not match model {aec.header.model_name!r}")
    stack = torch.stack([coder_for(net).restore(net, a) for a in files])
    with autocast(device):
        decoded = net.decode(stack.to(device).contiguous(memory_format=torch.channels_last))
    pixels = decoded.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    images = []
    for aec, rgb in zip(files, pixels, strict=True):
        h = aec.header
        crop = np.ascontiguousarray(rgb[: h.height, : h.width])
        images.append(
            ImageData(crop, aec.alpha_array(), h.mode, h.source_mode, h.source_bits, aec.icc, aec.exif)
        )
    return images


def _preferred(model: str | Path | None, member_name: str) -> Path | None:
    """The model file a --model value points decoding at (a family: the member the file names)."""
    if model is None:
        return None
    family = find_family(model)
    if family is None:
        return resolve(model)
    for member in family.members:
        if member.model == member_name:
            return family.model_path(member)
    return None


def decode_with(
    net: LatentCodec, aec: aecformat.AecFile, device: torch.device | None = None, tile: int | None = None
) -> ImageData:
    """Restore an image from a parsed .aec file with a network in hand."""
    h = aec.header
    if net.stride != h.stride or net.latent_channels != h.channels:
        raise FormatError(f"latent layout {h.channels}x/{h.stride} does not match model {h.model_name!r}")
    latents = coder_for(net).restore(net, aec)
    alpha = aec.alpha_array()
    rgb = synthesize(net, latents, (h.height, h.width), device or torch.device("cpu"), tile)
    return ImageData(rgb, alpha, h.mode, h.source_mode, h.source_bits, aec.icc, aec.exif)


def decode(
    data: bytes,
    device: str = "auto",
    model: str | Path | None = None,
    tile: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    near: Sequence[Path] = (),
) -> ImageData:
    """Restore an image from .aec bytes; the model is found from the header's name and hash
    (``near``: folders to look in first, such as the one the file came from).

    The header's pixel count is held to ``max_pixels`` before any payload is inflated, so a small
    hostile file cannot make the decoder commit gigabytes.
    """
    aec = aecformat.unpack(data)
    check_pixels(aec.header.width, aec.header.height, max_pixels, "the image in this file")
    path = find_for_file(
        aec.header.model_name, aec.header.model_hash, _preferred(model, aec.header.model_name), near
    )
    dev = select_device(device)
    net, _ = model_on(path, dev)
    return decode_with(net, aec, dev, tile)
