"""Images <-> .aec bytes, one or many at a time: the library's encode and decode.

Each step has its own module: ``passes`` runs the networks, ``placement`` chooses the model and
its quality for each image (a target size included), ``pack`` turns one network's latents into
a file and back. Here they are put together, and a batch of files shares the networks' passes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from aecompress import format as aecformat
from aecompress import placement
from aecompress.content import AUTO
from aecompress.defaults import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY
from aecompress.device import select_device
from aecompress.errors import AecError, FormatError
from aecompress.family import find_family
from aecompress.imageio import ImageData, check_pixels
from aecompress.latents import quality_to_step
from aecompress.modelfile import find_for_file, resolve
from aecompress.pack import decode_batches, decode_with, pack_file, parse_workers
from aecompress.passes import analyse_stack, model_on, network_batch, tile_latents


@dataclass
class EncodeResult:
    data: bytes
    header: aecformat.AecHeader
    device: torch.device


def encode(
    image: ImageData,
    model: str | Path | None = None,
    quality: float = DEFAULT_QUALITY,
    device: str = "auto",
    tile: int | None = None,
    effort: int = 0,
    target_bpp: float | None = None,
    content: str = AUTO,
) -> EncodeResult:
    """Compress an image into .aec bytes with the given model (name, path or family) and quality,
    or, with ``target_bpp``, at the highest quality whose whole file stays at or under it.

    ``effort`` > 0 refines the latents with that many decoder passes (slower, better).
    ``content``: the kind of picture (``photo``, ``graphics``) whose members of a family code it,
    or ``auto`` to tell from the pixels.
    """
    dev = select_device(device)
    if target_bpp is not None:
        data, header = placement.encode_to_size(image, target_bpp, model, dev, tile, effort, content)
        return EncodeResult(data, header, dev)
    placer = placement.Placer(model, image, dev, tile, once=True, content=content)
    path, local = placer.place(quality)
    latents = placer.analysis(path)
    data, header = pack_file(path, image, latents, local, quality, effort, dev, placer.residual(quality))
    return EncodeResult(data, header, dev)


def encode_many(
    images: list[ImageData],
    model: str | Path | None = None,
    quality: float = DEFAULT_QUALITY,
    device: str = "auto",
    batch: int | None = None,
    tile: int | None = None,
    effort: int = 0,
    workers: int | None = None,
    content: str = AUTO,
) -> list[EncodeResult]:
    """Compress several images, running same-sized ones through the encoder as one batch.

    Batching pays on a GPU, where one image leaves most of the device idle (``batch``: default
    ``passes.network_batch``, one on the CPU). It is a pipeline: ``workers`` threads (default:
    ``pack.parse_workers``, none beside the CPU's own network pass) pack each batch's files
    (quantization, the integer side networks, zstd: they release the GIL) while the device
    analyses the next batch, and an image's latents are let go once its file is made, so at
    most two batches' latents are held. Images larger than one tile take the tiled path one by
    one. The files are those of packing each image alone after the same analysis, and come back
    in the order of ``images``. Each image is told apart by ``content`` as in ``encode``.
    """
    quality_to_step(quality)  # range check, before any work
    dev = select_device(device)
    family = find_family(model)
    placers = [placement.Placer(model, image, dev, tile, family, content=content) for image in images]
    if not placers:
        return []
    needs = [placer.needs(quality) for placer in placers]  # per image: its kind's members
    nets = {path: model_on(path, dev)[0] for paths in needs for path in paths}
    sizes: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        sizes.setdefault((image.height, image.width), []).append(index)
    size = network_batch(batch, dev)
    chunks = [group[i : i + size] for group in sizes.values() for i in range(0, len(group), size)]

    def packed(index: int) -> EncodeResult:
        placer = placers[index]
        path, local = placer.place(quality)
        latents = placer.analysis(path)  # an image larger than a tile is analysed here
        residual = placer.residual(quality)
        data, header = pack_file(path, images[index], latents, local, quality, effort, dev, residual)
        placer.latents.clear()
        return EncodeResult(data, header, dev)

    def analysed(chunk: list[int]) -> list[int]:
        """The chunk's batched analyses (for images within one tile of each model)."""
        image = images[chunk[0]]
        for path, net in nets.items():
            s, side = net.stride, tile_latents(net, tile)
            users = [i for i in chunk if path in needs[i]]
            if users and -(-image.height // s) <= side and -(-image.width // s) <= side:
                stack = analyse_stack(net, [images[i].rgb for i in users], dev)
                for index, y in zip(users, stack, strict=True):
                    placers[index].latents[path] = y
        return chunk

    results: list[EncodeResult | None] = [None] * len(images)
    threads = parse_workers(workers, dev)
    if threads <= 1:
        for chunk in chunks:
            for index in analysed(chunk):
                results[index] = packed(index)
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="aec-pack") as pool:
            running: deque[list[tuple[int, Future[EncodeResult]]]] = deque()
            for chunk in chunks:
                if len(running) > 1:  # the batch before last is packed before another is analysed
                    for index, future in running.popleft():
                        results[index] = future.result()
                running.append([(i, pool.submit(packed, i)) for i in analysed(chunk)])
            for jobs in running:
                for index, future in jobs:
                    results[index] = future.result()
    return [r for r in results if r is not None]


def decode_many(
    datas: list[bytes],
    device: str = "auto",
    model: str | Path | None = None,
    batch: int | None = None,
    tile: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    near: Sequence[Path] = (),
    workers: int | None = None,
) -> list[ImageData | AecError]:
    """Restore several files, running same-shaped latents of one model through the decoder together.

    The GPU counterpart of ``encode_many`` (``batch``: default ``passes.network_batch``). A file
    that cannot be decoded yields its error in its place, so one bad file does not stop the
    others. ``workers`` threads parse the next batches while the decoder network runs (default:
    ``pack.parse_workers``).
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
        indices = iter([index for index, _ in members])
        files = [aec for _, aec in members]
        size = network_batch(batch, dev)
        for images in decode_batches(net, files, dev, size, parse_workers(workers, dev)):
            for image in images:
                out[next(indices)] = image
    return [item if item is not None else FormatError("not decoded") for item in out]


def _preferred(model: str | Path | None, member_name: str) -> Path | None:
    """The model file a --model value points decoding at (a family: the member the file names)."""
    if model is None:
        return None
    family = find_family(model)
    if family is None:
        return resolve(model)
    member = family.member_named(member_name)
    return None if member is None else family.model_path(member)


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
