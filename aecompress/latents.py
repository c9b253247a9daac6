"""The networks' float latents <-> a file's coded integer tensors, as each architecture declares.

Between the networks and the streams of ``aecompress.coding`` sits what depends on the model:
how latents are quantized, in what order channels are stored, and what side information tells
the decoder each latent's class. An architecture names its coder (``LatentCodec.coding``):

- ``channel-context`` (factorized, tutorial): round(y / step); channels sorted by spread; the
  classes come from the channels already decoded (scheme 1);
- ``scale-classes`` (hyperprior): y scaled by the gain vector of the rate; hyper-latents z coded
  first; each latent's class is its predicted scale, computed from z by the model's exact integer
  hyper synthesis (scheme 3; files of scheme 2 still decode).

The header's quantization step records the model's own -q for both: step = 2^((75 - q) / 25).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from aecompress import coding
from aecompress import format as aecformat
from aecompress.defaults import DEFAULT_QUALITY
from aecompress.errors import FormatError
from aecompress.format import AecFile
from aecompress.nn import LatentCodec
from aecompress.nn.context import CONTEXT_INPUT_LIMIT
from aecompress.nn.integer import ACT_BITS, WEIGHT_BITS
from aecompress.nn.models import LOG2_SCALE_MIN


def quality_to_step(quality: float) -> float:
    """-q 0..100 -> quantization step: 75 is the model's trained step 1, every 25 halves/doubles."""
    if not 0 <= quality <= 100:
        raise ValueError(f"quality {quality} is outside 0..100")
    return float(2.0 ** ((DEFAULT_QUALITY - quality) / 25.0))


def step_to_quality(step: float) -> float:
    """The inverse of ``quality_to_step`` (what a decoder reads back from the header)."""
    return DEFAULT_QUALITY - 25.0 * math.log2(step)


def parsed_quality(quality: float) -> float:
    """The -q a decoder reads back for ``quality`` (the header stores the step as float32): the
    one whose gains its reconstruction uses."""
    return step_to_quality(float(np.float32(quality_to_step(quality))))


QUANTIZE_CHANNELS = 8  # channels rounded at a time (the float scratch is theirs, not the image's)

# How far past 0.5 a latent of scale class 0, 1, 2, 3 (predicted scales below 0.15, 0.21, 0.30,
# 0.42 quantization steps) must lie before it is coded as nonzero rather than 0. In those
# classes a nonzero costs many bits (a rare symbol and its sign) and a zero little, so the
# encoder zeroes more of them: a dead zone, the simplest rate-distortion optimized quantization.
# The decoder is untouched. Measured on BSDS500 validation images (never Kodak), both hyperprior
# members: BD-rate -1.7% to -2.1% in PSNR and MS-SSIM (docs/results.md).
DEAD_ZONE = np.array([0.5, 0.25, 0.15, 0.05])


def dead_zone(values: torch.Tensor, rounded: torch.Tensor, classes: np.ndarray) -> torch.Tensor:
    """``rounded`` (round(values)) with the latents of the lowest scale classes that lie
    within ``0.5 + DEAD_ZONE[class]`` of zero set to zero, in place."""
    extra = np.zeros(max(int(classes.max(initial=0)) + 1, len(DEAD_ZONE)), dtype=np.float32)
    extra[: len(DEAD_ZONE)] = DEAD_ZONE
    limit = torch.from_numpy(0.5 + extra[classes]).to(values.device)
    return rounded.masked_fill_(values.abs() < limit, 0.0)


def quantize(
    latents: torch.Tensor | GainScaled, step: float, classes: np.ndarray | None = None
) -> np.ndarray:
    """Round latents / step to integers, int8 when they fit and int16 otherwise (a byte a
    latent until a value needs two, so a large photo never holds both); with each latent's
    scale class, through the classes' dead zone (``DEAD_ZONE``)."""
    q = np.empty(tuple(latents.shape), dtype=np.int8)
    for c in range(0, latents.shape[0], QUANTIZE_CHANNELS):
        values = latents[c : c + QUANTIZE_CHANNELS].float() / step
        part = torch.round(values).clamp_(-32768, 32767)
        if classes is not None:
            part = dead_zone(values, part, classes[c : c + QUANTIZE_CHANNELS])
        q = widened(q, part)
        q[c : c + QUANTIZE_CHANNELS] = part.to(torch.int16 if q.dtype != np.int8 else torch.int8).numpy()
    return q


def widened(store: np.ndarray, values: np.ndarray | torch.Tensor) -> np.ndarray:
    """``store`` as int16 (values kept) when it is int8 and ``values`` do not all fit a byte;
    else ``store`` itself. Integers are held a byte a latent until one needs two."""
    count = values.numel() if isinstance(values, torch.Tensor) else values.size
    if store.dtype != np.int8 or count == 0 or (int(values.min()) >= -128 and int(values.max()) <= 127):
        return store
    return store.astype("<i2")


def stored_integers(aec: AecFile) -> np.ndarray:
    """The quantized latents of a file coded by channel (factorized models, format versions 1-4),
    (C, H, W) in natural channel order; values outside the header's dtype are an error."""
    h = aec.header
    if aec.tensors:
        stored = coding.decode_tensor(next(t for t in aec.tensors if t.role == coding.ROLE_LATENTS), h.dtype)
    else:  # versions 1-3: one frame of the container's LATN chunk
        raw = aecformat.inflate(aec.latents, h.latent_bytes, "latents")
        planar = h.dtype == np.int16 and h.planar
        flat = coding.from_planes(raw) if planar else np.frombuffer(raw, dtype=h.dtype)
        stored = flat.reshape(h.channels, h.latent_height, h.latent_width)
    stored = in_range(stored, h.dtype)
    if aec.order is None:
        return stored
    latents = np.empty_like(stored)
    latents[aec.order] = stored
    return latents


def in_range(q: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Decoded integers as the header's dtype, refused when one lies outside it (a hostile file)."""
    info = np.iinfo(dtype)
    if q.size and (q.min() < info.min or q.max() > info.max):
        raise FormatError(f"a latent in the streams is outside the header's {np.dtype(dtype).name} range")
    return q.astype(dtype, copy=False)


def channel_order(q: np.ndarray) -> np.ndarray:
    """Channels sorted by the spread of their integers: how the latents are stored."""
    return np.argsort(q.reshape(q.shape[0], -1).std(axis=1), kind="stable")


@dataclass
class CodedLatents:
    """What a coder hands the container: the coded tensors and the header's latent fields."""

    tensors: list[coding.CodedTensor]
    order: np.ndarray | None
    dtype: np.dtype
    step: float
    # what a decoder's ``restore_lazily`` will give for these tensors, where asked for: an encoder
    # that adds a pixel residual synthesizes from it instead of parsing its own file again
    restored: torch.Tensor | GainScaled | None = None


class LatentCoder(Protocol):
    def code(
        self, net: LatentCodec, latents: torch.Tensor, quality: float, restored: bool = False
    ) -> CodedLatents:
        """Float latents (C, H, W) of the analysis transform at the model's own -q -> tensors
        (and, with ``restored``, the latents a decoder will restore from them, the same floats)."""
        ...

    def restore(self, net: LatentCodec, aec: AecFile) -> torch.Tensor:
        """A parsed file -> the float latents (C, H, W) the synthesis transform takes."""
        ...

    def restore_lazily(self, net: LatentCodec, aec: AecFile) -> torch.Tensor | GainScaled:
        """What ``restore`` gives, or, where the coder has them, the integers with their
        per-channel scale, dequantized where a part is read (the same floats): a large photo's
        synthesis then holds a byte or two a latent instead of four."""
        ...

    def estimate(self, net: LatentCodec, latents: torch.Tensor, quality: float) -> float:
        """About how many bytes ``code`` would take, at a fraction of its cost (a family's
        size-matched hand-over searches with it)."""
        ...

    def grid(self, net: LatentCodec, quality: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The quantization grid at the model's own -q, per channel (C, 1, 1): the coded integer
        is round(y * scale) and the synthesis gets integer * recon (encoder-side refinement
        searches on it); None where there is no fixed grid (a context model's means move it)."""
        ...

    def coded_zeros(self, net: LatentCodec, latents: torch.Tensor, quality: float) -> torch.Tensor | None:
        """Which latents (C, H, W, bool) the file would code as 0, the dead zone's included:
        refinement keeps them at zero. None where ``grid`` is None."""
        ...


class ChannelContextCoder:
    def code(
        self, net: LatentCodec, latents: torch.Tensor, quality: float, restored: bool = False
    ) -> CodedLatents:
        step = quality_to_step(quality)
        q = quantize(latents, step)
        order = channel_order(q)
        tensors = [coding.encode_tensor(q[order], workers=torch.get_num_threads())]
        again = torch.from_numpy(q.astype(np.float32)) * step if restored else None
        return CodedLatents(tensors, order, q.dtype, step, again)

    def restore(self, net: LatentCodec, aec: AecFile) -> torch.Tensor:
        return torch.from_numpy(stored_integers(aec).astype(np.float32)) * aec.header.step

    def restore_lazily(self, net: LatentCodec, aec: AecFile) -> torch.Tensor | GainScaled:
        return self.restore(net, aec)

    def estimate(self, net: LatentCodec, latents: torch.Tensor, quality: float) -> float:
        return float(sum(t.coded_bytes for t in self.code(net, latents, quality).tensors))

    def grid(self, net: LatentCodec, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        step = torch.full((net.latent_channels, 1, 1), quality_to_step(quality))
        return 1.0 / step, step

    def coded_zeros(self, net: LatentCodec, latents: torch.Tensor, quality: float) -> torch.Tensor:
        return torch.from_numpy(quantize(latents, quality_to_step(quality)) == 0)


@runtime_checkable
class SideInformation(Protocol):
    """What a model with side information offers its coder: the variable-rate gains, the
    hyper-analysis that makes the hyper-latents z, and the exact scale classes computed from z.
    A new architecture with side information implements this and names its coder."""

    hyper_stride: int  # latent positions per hyper-latent position
    hyper_latent_channels: int
    scale_class_count: int

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def rate_position(self, quality: float) -> float: ...

    def hyper_analysis(self, y: torch.Tensor) -> torch.Tensor: ...

    def gains(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def scale_classes(self, z: np.ndarray, shape: tuple[int, int], exact: bool = True) -> np.ndarray: ...


def side_information(net: LatentCodec) -> SideInformation:
    """The model as its side-information interface (a model file naming the wrong coder is refused)."""
    if not isinstance(net, SideInformation):
        raise FormatError(f"a {net.arch} model has no side information for this coder")
    return net


def gains_at(model: SideInformation, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The gain and inverse gain vectors (C,) on the CPU at the model's own -q."""
    device = next(model.parameters()).device  # the model may sit on a GPU; the latents on the CPU
    position = torch.tensor([model.rate_position(quality)], dtype=torch.float32, device=device)
    gain, igain, _ = model.gains(position)
    return gain[0].cpu(), igain[0].cpu()


HYPER_TILE = 256  # latent rows and columns of one tile of the hyper-analysis (Kodak: one tile)


class GainScaled:
    """Latents (C, H, W) times the gain vector of a rate (or integers times their inverse gain,
    dequantized), computed a part at a time where it is read: the product for a whole large
    image would be another four bytes a latent (150 MB for a 6000x4000 photo at stride 8), held
    beside the latents for the whole encode or decode. A part is the same float32 product,
    element for element, as the whole would hold."""

    def __init__(self, latents: torch.Tensor, gain: torch.Tensor) -> None:
        self.latents = latents
        self.gain = gain.to(latents.device)[:, None, None]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape)

    def __getitem__(self, index: slice | tuple[slice, ...]) -> torch.Tensor:
        """The scaled latents at ``index`` (channels, or channels, rows, columns), on the CPU."""
        channels = index if isinstance(index, slice) else index[0]
        return (self.latents[index] * self.gain[channels]).float().cpu()


def gain_scaled(model: SideInformation, latents: torch.Tensor, quality: float) -> GainScaled:
    """The latents scaled by the gain of the model's own -q (``GainScaled``)."""
    return GainScaled(latents, gains_at(model, quality)[0])


def hyper_latents(model: SideInformation, scaled: GainScaled) -> np.ndarray:
    """The integer hyper-latents z of gain-scaled latents, from the hyper-analysis run in tiles
    with a halo: its activations (a hundred channels at the latents' size) are a tile's, not the
    image's. z is the encoder's choice, coded in the file, so a tile's float sums need not match
    a whole-image pass bit for bit."""
    device = next(model.parameters()).device
    s = model.hyper_stride
    _, h, w = scaled.shape
    halo = _hyper_halo(model)
    z = np.empty((model.hyper_latent_channels, -(-h // s), -(-w // s)), dtype=np.int16)
    tile = HYPER_TILE if halo is not None else max(h, w, 1)
    halo = halo or 0
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            sy, sx = max(0, y0 - halo), max(0, x0 - halo)
            part = scaled[
                slice(None), slice(sy, min(h, y0 + tile + halo)), slice(sx, min(w, x0 + tile + halo))
            ]
            z_float = model.hyper_analysis(part[None].to(device))[0].cpu()
            ny, nx = -(-min(tile, h - y0) // s), -(-min(tile, w - x0) // s)
            oy, ox = (y0 - sy) // s, (x0 - sx) // s
            z_part = torch.round(z_float[:, oy : oy + ny, ox : ox + nx]).clamp_(-32768, 32767)
            z[:, y0 // s : y0 // s + ny, x0 // s : x0 // s + nx] = z_part.to(torch.int16).numpy()
    return z


def _hyper_halo(model: SideInformation) -> int | None:
    """Latent rows beyond a tile's edge that the hyper-analysis reaches, rounded up to its
    stride (so tiles keep its grid); None when h_a is not a plain stack of convolutions and
    pointwise layers (it then runs on the whole image)."""
    h_a = getattr(model, "h_a", None)
    if not isinstance(h_a, torch.nn.Sequential) or HYPER_TILE % model.hyper_stride:
        return None
    reach, scale = 0, 1
    for layer in h_a:
        if isinstance(layer, torch.nn.Conv2d):
            k, p, stride = layer.kernel_size[0], layer.padding, layer.stride[0]
            if not isinstance(p, tuple) or layer.dilation != (1, 1):
                return None
            reach += max(p[0], k - 1 - p[0]) * scale
            scale *= stride
        elif not isinstance(layer, torch.nn.ReLU | torch.nn.LeakyReLU):
            return None
    s = model.hyper_stride
    return -(-reach // s) * s


def hyper_latents_of(model: SideInformation, aec: AecFile) -> np.ndarray:
    """A file's hyper-latents z, their shape checked against the model's."""
    h = aec.header
    z_tensor = next(t for t in aec.tensors if t.role == coding.ROLE_HYPER_LATENTS)
    s = model.hyper_stride
    want = (model.hyper_latent_channels, -(-h.latent_height // s), -(-h.latent_width // s))
    if z_tensor.shape != want:
        raise FormatError(f"hyper-latents of shape {z_tensor.shape}, the model needs {want}")
    return coding.decode_tensor(z_tensor, np.dtype("<i2"))


class ScaleClassCoder:
    @torch.inference_mode()
    def _integers(
        self, net: LatentCodec, latents: torch.Tensor, quality: float, exact: bool = True
    ) -> tuple[np.ndarray, ...]:
        """The hyper-latents z, the latents y and y's scale classes at the model's own -q
        (``exact=False``: classes from the float h_s, for estimates)."""
        hyper = side_information(net)
        scaled = gain_scaled(hyper, latents, quality)
        z = hyper_latents(hyper, scaled)
        classes = hyper.scale_classes(z, (scaled.shape[1], scaled.shape[2]), exact)
        return z, quantize(scaled, 1.0, classes), classes

    def code(
        self, net: LatentCodec, latents: torch.Tensor, quality: float, restored: bool = False
    ) -> CodedLatents:
        hyper = side_information(net)
        z, y, classes = self._integers(net, latents, quality)
        tensors = [
            coding.encode_tensor(z, role=coding.ROLE_HYPER_LATENTS, workers=torch.get_num_threads()),
            coding.encode_grouped(
                y,
                classes,
                hyper.scale_class_count,
                coding.SCALE_CLASS_DICTIONARIES,
                workers=torch.get_num_threads(),
            ),
        ]
        again = None
        if restored:
            again = GainScaled(torch.from_numpy(y), gains_at(hyper, parsed_quality(quality))[1])
        return CodedLatents(tensors, None, y.dtype, quality_to_step(quality), again)

    def estimate(self, net: LatentCodec, latents: torch.Tensor, quality: float) -> float:
        """z coded as the file codes it, y at the order-0 entropy of each scale class (classes
        from the float h_s): the ratio of two members' files of about the same size comes out
        within 3% of the coded one (BSDS500, the bundled members), at a quarter of the cost."""
        hyper = side_information(net)
        z, y, classes = self._integers(net, latents, quality, exact=False)
        z_bytes = coding.encode_tensor(z, role=coding.ROLE_HYPER_LATENTS).coded_bytes
        return z_bytes + coding.classed_entropy_bytes(y, classes, hyper.scale_class_count)

    @torch.inference_mode()
    def grid(self, net: LatentCodec, quality: float) -> tuple[torch.Tensor, torch.Tensor]:
        gain, igain = gains_at(side_information(net), quality)
        return gain[:, None, None], igain[:, None, None]

    def coded_zeros(self, net: LatentCodec, latents: torch.Tensor, quality: float) -> torch.Tensor:
        return torch.from_numpy(self._integers(net, latents, quality)[1] == 0)

    @torch.inference_mode()
    def restore(self, net: LatentCodec, aec: AecFile) -> torch.Tensor:
        return self.restore_lazily(net, aec)[:]

    @torch.inference_mode()
    def restore_lazily(self, net: LatentCodec, aec: AecFile) -> GainScaled:
        hyper = side_information(net)
        h = aec.header
        found = {t.role: t for t in aec.tensors}
        if set(found) != {coding.ROLE_LATENTS, coding.ROLE_HYPER_LATENTS}:
            raise FormatError("a hyperprior file needs its latents and hyper-latents")
        z = hyper_latents_of(hyper, aec)
        classes = hyper.scale_classes(z, (h.latent_height, h.latent_width))
        y = coding.decode_classed(found[coding.ROLE_LATENTS], classes, hyper.scale_class_count, h.dtype)
        del classes
        return GainScaled(torch.from_numpy(y), gains_at(hyper, step_to_quality(h.step))[1])


@runtime_checkable
class SlicedSideInformation(SideInformation, Protocol):
    """Side information with means and a context from earlier channel slices, computed exactly
    (``nn.context``): the integer hyper synthesis, then each slice from the ones before it."""

    slices: int
    slice_width: int

    @property
    def context_reach(self) -> int: ...

    def integer_hyper_features(self, z: np.ndarray, rows: range, cols: range) -> np.ndarray: ...

    def integer_hyper_outputs(
        self, features: np.ndarray, k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def integer_slice(
        self, k: int, log2: np.ndarray, mean: np.ndarray, decoded: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def float_hyper_region(
        self, z: np.ndarray, rows: range, cols: range
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def slice_params(
        self, k: int, log2_h: torch.Tensor, mean_h: torch.Tensor, decoded: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


MEAN_SHIFT = WEIGHT_BITS  # an integer network's accumulator (2^20) -> fixed point at ACT_BITS (2^8)


def accumulator_classes(log2_acc: np.ndarray, count: int) -> np.ndarray:
    """Scale classes (half an octave each from 2^LOG2_SCALE_MIN) of log2-scales given at an
    integer network's accumulator scale: integer arithmetic only."""
    start = round(LOG2_SCALE_MIN * 2**WEIGHT_BITS * 2**ACT_BITS)
    width = 2 ** (WEIGHT_BITS + ACT_BITS - 1)
    return np.clip((log2_acc - start) // width, 0, count - 1).astype(np.uint8)


class SliceContextCoder:
    """Hyper-latents, then the latents slice by slice, each quantized around its predicted mean
    and coded by the scale class its exact integer networks give (scheme 3 per slice, format
    version 6). The decoder reproduces each slice's classes and means from the slices before it,
    so every number the parse needs comes from integers."""

    @torch.inference_mode()
    def _integers(
        self, net: LatentCodec, latents: torch.Tensor, quality: float, restored: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], torch.Tensor | None]:
        """The hyper-latents z, each slice's residuals round(y - mean) (int8, or int16 where a
        value needs it) and their classes; with ``restored``, the float latents a decoder will
        restore from them.

        Tile by tile (``CONTEXT_TILE``): each tile runs the hyper synthesis and every slice over
        itself and a halo of (slices - 1) x one context's reach (each slice carries the error at
        the halo's cut edge one reach further in), so what is kept is exact and the memory held
        is a tile's, whatever the image's size."""
        model = _sliced(net)
        scaled = gain_scaled(model, latents, quality)
        z = hyper_latents(model, scaled)
        _, h, w = scaled.shape
        sw, count = model.slice_width, model.scale_class_count
        # int8 until a value needs more: a large photo's residuals are a byte a latent, not two
        symbols = [np.empty((sw, h, w), dtype=np.int8) for _ in range(model.slices)]
        classes = [np.empty((sw, h, w), dtype=np.uint8) for _ in range(model.slices)]
        again = np.empty((model.slices * sw, h, w), dtype=np.float32) if restored else None
        halo = (model.slices - 1) * model.context_reach
        for rows, cols, outer in _context_tiles(h, w, halo):
            log2_acc, mean_acc = model.integer_hyper_outputs(model.integer_hyper_features(z, *outer))
            y = scaled[_index(*outer)].numpy()
            at, keep = _placed(rows, cols, outer)
            decoded: list[np.ndarray] = []
            for k in range(model.slices):
                part = slice(k * sw, (k + 1) * sw)
                log2, mean = model.integer_slice(k, log2_acc[part], mean_acc[part], decoded)
                fixed = mean >> MEAN_SHIFT
                cls = accumulator_classes(log2, count)
                offset = torch.from_numpy(y[k * sw : (k + 1) * sw].astype(np.float64) - fixed / 2**ACT_BITS)
                residual = dead_zone(offset, torch.round(offset), cls).numpy()
                s = np.clip(residual, -32768, 32767).astype(np.int64)
                decoded.append(s * 2**ACT_BITS + fixed)
                kept = s[keep]
                symbols[k] = widened(symbols[k], kept)
                symbols[k][at] = kept
                classes[k][at] = cls[keep]
                if again is not None:  # as ``restore`` computes it: float64, rounded once to float32
                    again[part][at] = decoded[-1][keep] / 2**ACT_BITS
        if again is None:
            return z, symbols, classes, None
        igain = gains_at(model, parsed_quality(quality))[1]
        return z, symbols, classes, torch.from_numpy(again).mul_(igain[:, None, None])

    def code(
        self, net: LatentCodec, latents: torch.Tensor, quality: float, restored: bool = False
    ) -> CodedLatents:
        model = _sliced(net)
        z, symbols, classes, again = self._integers(net, latents, quality, restored)
        small = all(s.min() >= -128 and s.max() <= 127 for s in symbols if s.size)
        dtype = np.dtype(np.int8) if small else np.dtype("<i2")
        workers = torch.get_num_threads()
        tensors = [coding.encode_tensor(z, role=coding.ROLE_HYPER_LATENTS, workers=workers)]
        tensors += [
            coding.encode_grouped(
                s.astype(dtype, copy=False),
                c,
                model.scale_class_count,
                coding.SCALE_CLASS_DICTIONARIES,
                role=coding.ROLE_SLICE + k,
                workers=workers,
            )
            for k, (s, c) in enumerate(zip(symbols, classes, strict=True))
        ]
        return CodedLatents(tensors, None, dtype, quality_to_step(quality), again)

    @torch.inference_mode()
    def estimate(self, net: LatentCodec, latents: torch.Tensor, quality: float) -> float:
        """z coded as the file codes it, each slice at the order-0 entropy of its classes, with
        the means and classes of the float networks (about three times faster than the exact
        ones; a rounding or a class may differ where a value lies on a boundary), in the tiles
        ``_integers`` uses."""
        model = _sliced(net)
        scaled = gain_scaled(model, latents, quality)
        z = hyper_latents(model, scaled)
        device = next(model.parameters()).device
        _, h, w = scaled.shape
        sw, count = model.slice_width, model.scale_class_count
        symbols = np.empty((model.slices * sw, h, w), dtype=np.int16)
        classes = np.empty((model.slices * sw, h, w), dtype=np.uint8)
        for rows, cols, outer in _context_tiles(h, w, (model.slices - 1) * model.context_reach):
            log2_h, mean_h = model.float_hyper_region(z, *outer)
            y = scaled[_index(*outer)][None].to(device)
            at, keep = _placed(rows, cols, outer)
            decoded: list[torch.Tensor] = []
            for k in range(model.slices):
                part = slice(k * sw, (k + 1) * sw)
                log2, mean = model.slice_params(k, log2_h, mean_h, decoded)
                c = torch.floor((log2 - LOG2_SCALE_MIN) * 2).clamp_(0, count - 1).to(torch.uint8).cpu()
                offset = y[:, part] - mean
                s = dead_zone(offset, torch.round(offset), c.numpy()).clamp_(-32768, 32767)
                decoded.append(s + mean)
                symbols[part][at] = s[0][keep].to(torch.int16).cpu().numpy()
                classes[part][at] = c[0][keep].numpy()
        z_bytes = coding.encode_tensor(z, role=coding.ROLE_HYPER_LATENTS).coded_bytes
        parts = [slice(k * sw, (k + 1) * sw) for k in range(model.slices)]
        return z_bytes + sum(coding.classed_entropy_bytes(symbols[p], classes[p], count) for p in parts)

    def grid(self, net: LatentCodec, quality: float) -> None:
        return None  # it quantizes around predicted means: no fixed grid to refine on

    def coded_zeros(self, net: LatentCodec, latents: torch.Tensor, quality: float) -> None:
        return None

    def restore_lazily(self, net: LatentCodec, aec: AecFile) -> torch.Tensor | GainScaled:
        return self.restore(net, aec)  # the means make every latent its own float

    @torch.inference_mode()
    def restore(self, net: LatentCodec, aec: AecFile) -> torch.Tensor:
        """Slice by slice (a slice's stream needs all its classes), each slice's classes and means
        tile by tile from the slices already restored, in a halo of one context's reach. The
        hyper synthesis runs once, in tiles; its last hidden activations are kept (int32), and
        each slice's pass runs only its 1x1 output layer, for the slice's channels."""
        model = _sliced(net)
        h = aec.header
        found = {t.role: t for t in aec.tensors}
        roles = {coding.ROLE_HYPER_LATENTS, *(coding.ROLE_SLICE + k for k in range(model.slices))}
        if set(found) != roles:
            raise FormatError(
                f"a context model's file needs its hyper-latents and {model.slices} latent slices"
            )
        z = hyper_latents_of(model, aec)
        sw, count = model.slice_width, model.scale_class_count
        lh, lw = h.latent_height, h.latent_width
        tiles = list(_context_tiles(lh, lw, model.context_reach))
        features: np.ndarray | None = None
        for rows, cols, _ in tiles:
            part = model.integer_hyper_features(z, rows, cols)
            if features is None:
                features = np.empty((part.shape[0], lh, lw), dtype=np.int32)
            features[_index(rows, cols)] = part
        assert features is not None
        # one tile (a Kodak image): the output layer once for every slice, as one product
        whole = model.integer_hyper_outputs(features) if len(tiles) == 1 else None
        y = np.empty((model.slices * sw, lh, lw), dtype=np.float32)
        for k in range(model.slices):
            tensor = found[coding.ROLE_SLICE + k]
            if tensor.shape != (sw, lh, lw):
                raise FormatError(f"latent slice {k} of shape {tensor.shape} does not fit the model")
            classes = np.empty((sw, lh, lw), dtype=np.uint8)
            fixed = np.empty((sw, lh, lw), dtype=np.int64)
            for rows, cols, outer in tiles:
                around = _index(*outer)
                decoded = [_fixed_point(y[j * sw : (j + 1) * sw][around]) for j in range(k)]
                if whole is None:
                    log2, mean = model.integer_hyper_outputs(features[around], k)
                else:
                    log2, mean = whole[0][k * sw : (k + 1) * sw], whole[1][k * sw : (k + 1) * sw]
                log2, mean = model.integer_slice(k, log2, mean, decoded)
                at, keep = _placed(rows, cols, outer)
                classes[at] = accumulator_classes(log2[keep], count)
                fixed[at] = mean[keep] >> MEAN_SHIFT
            symbols = coding.decode_classed(tensor, classes, count, h.dtype)
            del classes
            for c in range(sw):  # a channel at a time: the int64 and float64 scratch is a channel's
                fixed[c] += symbols[c].astype(np.int64) * 2**ACT_BITS
                y[k * sw + c] = fixed[c] / 2**ACT_BITS  # float64, rounded once to float32
        igain = gains_at(model, step_to_quality(h.step))[1]
        return torch.from_numpy(y).mul_(igain[:, None, None])


CONTEXT_TILE = 128  # latent rows and columns of one tile of a context model's integer passes


def _context_tiles(h: int, w: int, halo: int) -> Iterator[tuple[range, range, tuple[range, range]]]:
    """Tiles of an h x w latent grid: (rows, cols) of each, and the region with ``halo`` more on
    every side (clipped to the grid) that its passes run over."""
    for y0 in range(0, h, CONTEXT_TILE):
        y1 = min(y0 + CONTEXT_TILE, h)
        for x0 in range(0, w, CONTEXT_TILE):
            x1 = min(x0 + CONTEXT_TILE, w)
            outer = (range(max(0, y0 - halo), min(h, y1 + halo)), range(max(0, x0 - halo), min(w, x1 + halo)))
            yield range(y0, y1), range(x0, x1), outer


Index = tuple[slice, slice, slice]


def _index(rows: range, cols: range) -> Index:
    """The rows and columns of a (C, H, W) array, every channel."""
    return (slice(None), slice(rows.start, rows.stop), slice(cols.start, cols.stop))


def _placed(rows: range, cols: range, outer: tuple[range, range]) -> tuple[Index, Index]:
    """A tile's place in the whole grid's (C, H, W) arrays and in its outer region's."""
    oy, ox = outer[0].start, outer[1].start
    inside = _index(range(rows.start - oy, rows.stop - oy), range(cols.start - ox, cols.stop - ox))
    return _index(rows, cols), inside


def _fixed_point(y: np.ndarray) -> np.ndarray:
    """Restored latents (float32 of integers / 2^ACT_BITS) back to the integers a slice context
    reads. Exact: a float32 holds every integer up to 2^24, and a context clamps its inputs to
    that (``CONTEXT_INPUT_LIMIT``, 2^24) anyway, so larger values read the same clamped."""
    limit = float(CONTEXT_INPUT_LIMIT)
    return np.clip(y.astype(np.float64) * 2**ACT_BITS, -limit, limit).astype(np.int64)


def _sliced(net: LatentCodec) -> SlicedSideInformation:
    if not isinstance(net, SlicedSideInformation):
        raise FormatError(f"a {net.arch} model has no slice context for this coder")
    return net


CODERS: dict[str, LatentCoder] = {
    "channel-context": ChannelContextCoder(),
    "scale-classes": ScaleClassCoder(),
    "slice-context": SliceContextCoder(),
}


def coder_for(net: LatentCodec) -> LatentCoder:
    """The coder an architecture declares."""
    return CODERS[net.coding]
