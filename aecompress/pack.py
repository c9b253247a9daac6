"""One network's float latents <-> .aec bytes: the coder's tensors under a header, and back to
pixels. Callers bring the network (``passes.model_on``) and the model's own -q; which model and
which -q serve an image is ``placement``'s business.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from aecompress import format as aecformat
from aecompress import residual as pixel_residual
from aecompress.defaults import DEFAULT_QUALITY
from aecompress.errors import AecError, FormatError
from aecompress.imageio import ImageData
from aecompress.latents import CodedLatents, coder_for
from aecompress.nn import LatentCodec
from aecompress.passes import analyse, model_on, synthesize, synthesize_stack
from aecompress.refine import refine

log = logging.getLogger("aecompress")


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
    return refine_and_pack(net, name, digest, image, latents, quality, label, effort, dev)


def pack_file(
    path: Path,
    image: ImageData,
    latents: torch.Tensor,
    quality: float,
    label: float,
    effort: int,
    device: torch.device,
    residual: float | pixel_residual.Span | None = None,
) -> tuple[bytes, aecformat.AecHeader]:
    """The file a model file makes of an image's latents at its own ``quality`` (refined first
    with ``effort`` > 0), recording ``label`` as the -q; with a pixel residual over its decoded
    image when given ``residual`` (a step, or a ``Span`` that ``pack_latents`` turns into one)."""
    net, info = model_on(path, device)
    return refine_and_pack(
        net, info.name, info.weights_hash, image, latents, quality, label, effort, device, residual
    )


def refine_and_pack(
    net: LatentCodec,
    name: str,
    digest: bytes,
    image: ImageData,
    latents: torch.Tensor,
    quality: float,
    label: float | None,
    effort: int,
    device: torch.device,
    residual: float | pixel_residual.Span | None = None,
) -> tuple[bytes, aecformat.AecHeader]:
    """``effort`` refinement passes on the coder's grid (none at 0), then ``pack_latents``. A
    context model has no fixed grid (it quantizes around predicted means): its files are packed
    unrefined, with a warning, so ``--effort`` on the default family works at every -q."""
    coder = coder_for(net)
    grid = coder.grid(net, quality) if effort > 0 else None
    if grid is not None:
        zeros = coder.coded_zeros(net, latents, quality)
        latents = refine(net, latents, image.rgb, grid, effort, device, zeros=zeros)
    elif effort > 0:
        log.warning("--effort does not refine %s (a context model) yet; encoding without it", name)
    return pack_latents(net, name, digest, image, latents, quality, label, residual, device)


def pack_latents(
    net: LatentCodec,
    name: str,
    digest: bytes,
    image: ImageData,
    latents: torch.Tensor,
    quality: float,
    label: float | None = None,
    residual: float | pixel_residual.Span | None = None,
    device: torch.device | None = None,
) -> tuple[bytes, aecformat.AecHeader]:
    """Quantize at the network's own ``quality`` and pack, recording ``label`` (the asked -q).

    With ``residual`` (a step in pixel levels, or a family member's ``Span`` of steps, the step
    then chosen for this image), the file also holds the difference between the image and what
    the file without it decodes to (on ``device``), quantized with that step."""
    restored = residual is not None
    data, header, coded, base = _packed(net, name, digest, image, latents, quality, label, restored, device)
    if residual is not None:
        assert base is not None
        if isinstance(residual, pixel_residual.Span):
            choice = pixel_residual.choose_step(image.rgb, base, residual, len(data))
        else:
            choice = pixel_residual.fixed_step(image.rgb, base, residual)
        data = _with_residual(image, base, header, coded, choice)
        if (
            isinstance(residual, pixel_residual.Span)
            and residual.cap is not None
            and len(data) > residual.cap
        ):
            # a drawn image's frame between two even steps loses the vertical repeats that zstd
            # finds at one step (its rows alternate steps), which the search's sample of single
            # rows cannot see: just below the end its file can pass the end's own
            end = pixel_residual.fixed_step(image.rgb, base, residual.end)
            data = min(data, _with_residual(image, base, header, coded, end), key=len)
    return data, header


def _with_residual(
    image: ImageData,
    base: np.ndarray,
    header: aecformat.AecHeader,
    coded: CodedLatents,
    choice: pixel_residual.Choice,
) -> bytes:
    """The file of ``coded`` with the residual of ``base`` quantized as ``choice`` says."""
    chunk = pixel_residual.make(
        image.rgb, base, choice.step, choice.setting, choice.classed, torch.get_num_threads()
    )
    return aecformat.pack(header, coded.tensors, image.alpha, image.icc, image.exif, coded.order, chunk)


def residual_end(
    path: Path,
    image: ImageData,
    latents: torch.Tensor,
    quality: float,
    span: pixel_residual.Span,
    device: torch.device,
) -> tuple[float, int]:
    """``Span.last`` and ``Span.cap`` for an image: its file at the end of a residual range (the
    model's own ``quality`` there), sized as the step search sizes files, and made (one more
    file, one more synthesis)."""
    net, info = model_on(path, device)
    end, header, coded, base = _packed(
        net, info.name, info.weights_hash, image, latents, quality, None, True, device
    )
    assert base is not None
    last, choice = pixel_residual.end_size(image.rgb, base, len(end), span)
    return last, len(_with_residual(image, base, header, coded, choice))


def _packed(
    net: LatentCodec,
    name: str,
    digest: bytes,
    image: ImageData,
    latents: torch.Tensor,
    quality: float,
    label: float | None,
    decoded: bool,
    device: torch.device | None,
) -> tuple[bytes, aecformat.AecHeader, CodedLatents, np.ndarray | None]:
    """The file without a residual, the coder's tensors it holds, and (``decoded``) the image
    it decodes to."""
    coded = coder_for(net).code(net, latents, quality, restored=decoded)
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
    if not decoded:
        return data, header, coded, None
    assert coded.restored is not None  # what the file's latents decode to, without a parse
    base = synthesize(net, coded.restored, (image.height, image.width), device or torch.device("cpu"))
    coded.restored = None
    return data, header, coded, base


def decode_with(
    net: LatentCodec, aec: aecformat.AecFile, device: torch.device | None = None, tile: int | None = None
) -> ImageData:
    """Restore an image from a parsed .aec file with a network in hand."""
    h = aec.header
    _check_layout(net, h)
    latents = coder_for(net).restore_lazily(net, aec)
    alpha = aec.alpha_array()
    rgb = synthesize(net, latents, (h.height, h.width), device or torch.device("cpu"), tile)
    rgb = pixel_residual.apply(rgb, aec)
    return ImageData(rgb, alpha, h.mode, h.source_mode, h.source_bits, aec.icc, aec.exif)


def _synthesized(
    net: LatentCodec, files: list[aecformat.AecFile], latents: list[torch.Tensor], device: torch.device
) -> list[ImageData]:
    """Restored latents of same-shaped files -> their images, in one decoder pass."""
    pixels = synthesize_stack(net, latents, device)
    images = []
    for aec, rgb in zip(files, pixels, strict=True):
        h = aec.header
        crop = pixel_residual.apply(np.ascontiguousarray(rgb[: h.height, : h.width]), aec)
        images.append(
            ImageData(crop, aec.alpha_array(), h.mode, h.source_mode, h.source_bits, aec.icc, aec.exif)
        )
    return images


def _restored(net: LatentCodec, aec: aecformat.AecFile) -> torch.Tensor | AecError:
    """One file's latents, or the error that stops it (so one bad file stops no other)."""
    try:
        _check_layout(net, aec.header)
        return coder_for(net).restore(net, aec)
    except AecError as exc:
        return exc


PARSE_AHEAD = 2  # batches parsed ahead of the one the decoder network is running


def parse_workers(requested: int | None, device: torch.device) -> int:
    """Threads that parse files while the decoder network runs: as asked, else one per core
    (up to 8) beside a GPU, and none beside the CPU's own network pass, which uses every core."""
    if requested is not None:
        return max(1, requested)
    return min(8, os.cpu_count() or 1) if device.type != "cpu" else 1


def decode_batches(
    net: LatentCodec, files: list[aecformat.AecFile], device: torch.device, batch: int, workers: int
) -> Iterator[list[ImageData | AecError]]:
    """Same-shaped files in batches, as a pipeline: ``workers`` threads parse the streams of the
    next batches (zstd, numpy and the integer networks release the GIL) while the device runs
    the decoder network on the current one. Yields each batch's images (or errors) in order."""
    chunks = [files[i : i + batch] for i in range(0, len(files), batch)]
    if workers <= 1:
        for chunk in chunks:
            yield _finished(net, chunk, [_restored(net, a) for a in chunk], device)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="aec-parse") as pool:
        ahead: deque[list[Future[torch.Tensor | AecError]]] = deque()
        for index, chunk in enumerate(chunks):
            while len(ahead) <= PARSE_AHEAD and index + len(ahead) < len(chunks):
                ahead.append([pool.submit(_restored, net, a) for a in chunks[index + len(ahead)]])
            yield _finished(net, chunk, [f.result() for f in ahead.popleft()], device)


def _finished(
    net: LatentCodec,
    chunk: list[aecformat.AecFile],
    restored: list[torch.Tensor | AecError],
    device: torch.device,
) -> list[ImageData | AecError]:
    """A parsed batch through the decoder network; files that failed to parse keep their error."""
    out: list[ImageData | AecError] = [
        r if isinstance(r, AecError) else FormatError("not decoded") for r in restored
    ]
    good = [i for i, r in enumerate(restored) if isinstance(r, torch.Tensor)]
    latents = [r for r in restored if isinstance(r, torch.Tensor)]
    if good:
        try:
            images: list[ImageData | AecError] = list(
                _synthesized(net, [chunk[i] for i in good], latents, device)
            )
        except AecError as exc:
            images = [exc] * len(good)
        for i, image in zip(good, images, strict=True):
            out[i] = image
    return out


def _check_layout(net: LatentCodec, h: aecformat.AecHeader) -> None:
    if net.stride != h.stride or net.latent_channels != h.channels:
        raise FormatError(f"latent layout {h.channels}x/{h.stride} does not match model {h.model_name!r}")
