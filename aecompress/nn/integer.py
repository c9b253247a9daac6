"""An exact integer copy of a small convolutional network, for what the decoder must reproduce.

The scale classes that decide how a hyperprior file's latents are parsed come from the hyper
synthesis h_s. Run in floats, its outputs differ in the last bits between CPUs, thread counts and
GPUs, and a class boundary crossed on one machine but not another turns the rest of the file
into garbage (the best-known failure of learned codecs). Here every weight is a fixed-point
integer, every activation is an integer, and every layer is a sum of integer products followed
by a floor division by a power of two, so the result is the same everywhere.

The sums run in float64 where the network sits: with integer operands and every partial sum
below 2^53, float64 arithmetic is exact whatever the order of summation, so any BLAS, thread
count, vector width or GPU gives the same integers. On the CPU torch's convolutions do the sums;
elsewhere plain matrix products (cuBLAS), so no convolution algorithm that rounds is ever picked.
Inputs and activations are clamped so that the bound holds even for a hostile file;
``tests/test_hyperprior.py`` checks both paths against a pure int64 reference.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_BITS = 12  # fractional bits of the weights
ACT_BITS = 8  # fractional bits of the activations between layers
INPUT_LIMIT = 1 << 15  # |input| (the coded hyper-latents are int16)
ACT_LIMIT = 1 << 22  # activations are clamped to [0, ACT_LIMIT)
WEIGHT_LIMIT = 1 << 20  # |integer weight|; larger means the float weights were not sane


@dataclass(frozen=True)
class IntegerLayer:
    weight: torch.Tensor  # float64 holding integers: conv (O, I, k, k); transposed conv (I, O, k, k)
    bias: torch.Tensor  # float64 holding integers, at the accumulator's scale
    stride: int
    padding: int
    output_padding: int
    transposed: bool
    relu: bool
    in_bits: int  # fractional bits of the input


class IntegerNet:
    """The integer copy of a Sequential of Conv2d / ConvTranspose2d layers with ReLU between."""

    def __init__(
        self,
        net: nn.Sequential,
        in_bits: int = 0,
        input_limit: int = INPUT_LIMIT,
        products: bool | None = None,
    ) -> None:
        """``in_bits``: fractional bits of the input integers (0: plain integers such as the coded
        hyper-latents; ACT_BITS for fixed-point values such as reconstructed latents);
        ``input_limit``: |input| is clamped below it, so the sums' bound holds for any file;
        ``products``: sum as plain matrix products (default: off the CPU, where convolution
        libraries pick algorithms of their own; on the CPU torch's own kernels are faster)."""
        layers: list[IntegerLayer] = []
        modules = list(net)
        self.input_limit = input_limit
        # the sums run where the network sits (CPU or CUDA): float64 products of integers are
        # exact on both, so the parse there needs no copy back to the CPU until its end
        self.device = next(net.parameters()).device
        self.products = self.device.type != "cpu" if products is None else products
        for i, module in enumerate(modules):
            if isinstance(module, nn.ReLU):
                continue
            if not isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                raise TypeError(f"no integer form for {type(module).__name__}")
            relu = i + 1 < len(modules) and isinstance(modules[i + 1], nn.ReLU)
            weight = torch.round(module.weight.detach().double() * 2.0**WEIGHT_BITS)
            if weight.abs().max() >= WEIGHT_LIMIT:
                raise ValueError("weights too large for the integer hyper synthesis")
            bias_src = (
                module.bias.detach().double()
                if module.bias is not None
                else torch.zeros(
                    weight.shape[1] if isinstance(module, nn.ConvTranspose2d) else weight.shape[0],
                    dtype=torch.float64,
                    device=weight.device,
                )
            )
            bias = torch.round(bias_src * 2.0 ** (WEIGHT_BITS + in_bits))
            out_pad = module.output_padding[0] if isinstance(module, nn.ConvTranspose2d) else 0
            layers.append(
                IntegerLayer(
                    weight, bias, int(module.stride[0]), int(module.padding[0]), int(out_pad),
                    isinstance(module, nn.ConvTranspose2d), relu, in_bits,
                )
            )  # fmt: skip
            in_bits = ACT_BITS
        self.layers = layers

    @property
    def out_bits(self) -> int:
        """Fractional bits of the last layer's output (its accumulator, not rescaled)."""
        return WEIGHT_BITS + self.layers[-1].in_bits

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(C, H, W) integers -> the last layer's integer accumulator (O, H', W') as int64."""
        return self._run(x).astype(np.int64)

    def selecting(self, outputs: Sequence[int]) -> IntegerNet:
        """This net computing only the given output channels of its last layer (the same
        integers for them, at that layer's share of the cost)."""
        last = self.layers[-1]
        index = torch.as_tensor(list(outputs), device=last.weight.device)
        weight = last.weight[:, index] if last.transposed else last.weight[index]
        chosen = copy.copy(self)
        chosen.layers = [*self.layers[:-1], replace(last, weight=weight, bias=last.bias[index])]
        return chosen

    def upsampling(self) -> int | None:
        """Output rows per input row, when every layer keeps a whole ratio (transposed layers
        and stride-1 convolutions); None when the net cannot be run in tiles."""
        scale = 1
        for layer in self.layers:
            if not layer.transposed and layer.stride != 1:
                return None
            scale *= layer.stride if layer.transposed else 1
        return scale

    def halo(self) -> int:
        """Input rows beyond each side of a tile that the tile's outputs can reach: each layer's
        reach in its own input's rows, summed over layers in input rows (rounded up)."""
        rows, scale = 0, 1
        for layer in self.layers:
            k, s, p = layer.weight.shape[2], layer.stride, layer.padding
            # transposed: output row o sums input rows (o + p - k + 1) / s .. (o + p) / s
            reach = max((k - 1 - p) // s, (s - 1 + p) // s) if layer.transposed else max(p, k - 1 - p)
            rows += -(-reach // scale)
            scale *= s if layer.transposed else 1
        return rows

    def window(
        self, rows: range, cols: range, shape: tuple[int, int]
    ) -> tuple[slice, slice, int, int] | None:
        """The input rows and columns (of an input of ``shape``) that the outputs at ``rows`` and
        ``cols`` reach, halo included, and where those outputs start in the output over that
        window; None when the net cannot be run in pieces."""
        up = self.upsampling()
        if up is None:
            return None
        halo = self.halo()
        sy, sx = max(0, rows.start // up - halo), max(0, cols.start // up - halo)
        ey, ex = min(shape[0], -(-rows.stop // up) + halo), min(shape[1], -(-cols.stop // up) + halo)
        return slice(sy, ey), slice(sx, ex), rows.start - sy * up, cols.start - sx * up

    def region(self, x: np.ndarray, rows: range, cols: range) -> np.ndarray:
        """The accumulator ``self(x)[:, rows, cols]`` exactly, from the input rows and columns
        those outputs reach (``window``) alone: memory and time of the region, not of x."""
        window = self.window(rows, cols, (x.shape[1], x.shape[2]))
        if window is None:
            return self(x)[:, rows.start : rows.stop, cols.start : cols.stop]
        in_rows, in_cols, top, left = window
        acc = self(x[:, in_rows, in_cols])
        return acc[:, top : top + len(rows), left : left + len(cols)]

    def tiles(self, x: np.ndarray, tile: int) -> Iterator[tuple[slice, slice, np.ndarray]]:
        """The accumulator ``self(x)`` piece by piece: (rows, cols, values) for tiles of ``tile``
        input rows and columns, each run with a halo and cropped, so the values are the whole
        net's exactly while the memory held is one tile's, whatever the image's size.

        The values are float64 holding the integers exactly (each below 2^53): a caller that
        only shifts and bounds them does so faster in floats than in int64."""
        up = self.upsampling()
        h, w = x.shape[1:]
        if up is None or (h <= tile and w <= tile):
            acc = self._run(x)
            yield slice(0, acc.shape[1]), slice(0, acc.shape[2]), acc
            return
        halo = self.halo()
        for y0 in range(0, h, tile):
            y1 = min(y0 + tile, h)
            for x0 in range(0, w, tile):
                x1 = min(x0 + tile, w)
                sy, sx = max(0, y0 - halo), max(0, x0 - halo)
                acc = self._run(x[:, sy : min(h, y1 + halo), sx : min(w, x1 + halo)])
                top, left = (y0 - sy) * up, (x0 - sx) * up
                bottom = (y1 - sy) * up if y1 < h else acc.shape[1]
                right = (x1 - sx) * up if x1 < w else acc.shape[2]
                rows = slice(y0 * up, y0 * up + bottom - top)
                cols = slice(x0 * up, x0 * up + right - left)
                yield rows, cols, acc[:, top:bottom, left:right]

    @torch.inference_mode()
    def _run(self, x: np.ndarray) -> np.ndarray:
        """The last layer's accumulator as float64 integers (exact: every sum is below 2^53)."""
        t = torch.from_numpy(
            np.clip(x.astype(np.int64), -self.input_limit, self.input_limit).astype(np.float64)
        )[None].to(self.device)
        for layer in self.layers:
            if self.products and layer.transposed:
                acc = _sum_transposed(t, layer)
            elif self.products and layer.stride == 1:
                p = layer.padding
                acc = _sum_products(F.pad(t, (p, p, p, p)), layer.weight, layer.bias)
            elif layer.transposed:
                acc = F.conv_transpose2d(
                    t, layer.weight, layer.bias, layer.stride, layer.padding, layer.output_padding
                )
            else:
                with torch.backends.cudnn.flags(enabled=False):  # no algorithm that rounds (FFT)
                    acc = F.conv2d(t, layer.weight, layer.bias, layer.stride, layer.padding)
            if layer.relu:  # in place; scaling by a power of two and the floor are exact
                shift = 2.0 ** -(WEIGHT_BITS + layer.in_bits - ACT_BITS)
                t = acc.clamp_(min=0).mul_(shift).floor_().clamp_(max=ACT_LIMIT - 1)
            else:
                t = acc
        return t[0].cpu().numpy()


BAND_VALUES = 1 << 22  # float64 values (32 MiB) of unfolded input per matrix product, at most


def _sum_products(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A stride-1 convolution of an already padded (1, C, H, W) float64 input, as matrix products
    of unfolded rows: the same integer sums as ``F.conv2d``, by one BLAS call a band whatever the
    device (no convolution algorithm to pick). Row bands bound the unfolded copy."""
    out_c, in_c, kh, kw = weight.shape
    h, w = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    if h <= 0 or w <= 0:
        return x.new_zeros((1, out_c, max(h, 0), max(w, 0)))
    matrix = weight.reshape(out_c, in_c * kh * kw)
    if kh == kw == 1:
        return (matrix @ x.reshape(in_c, h * w) + bias[:, None]).reshape(1, out_c, h, w)
    out = x.new_empty((1, out_c, h, w))
    rows = max(1, BAND_VALUES // (in_c * kh * kw * w))
    for top in range(0, h, rows):
        band = min(rows, h - top)
        cols = F.unfold(x[:, :, top : top + band + kh - 1], (kh, kw))[0]
        out[0, :, top : top + band] = (matrix @ cols + bias[:, None]).reshape(out_c, band, w)
    return out


def _sum_transposed(x: torch.Tensor, layer: IntegerLayer) -> torch.Tensor:
    """A transposed convolution as ``stride``² stride-1 convolutions, one per output phase, each
    with the kernel taps that reach it: the same integer sums as ``F.conv_transpose2d``, as
    matrix products."""
    s, p, k = layer.stride, layer.padding, layer.weight.shape[2]
    h, w = x.shape[2], x.shape[3]
    out_h = (h - 1) * s - 2 * p + k + layer.output_padding
    out_w = (w - 1) * s - 2 * p + k + layer.output_padding
    out = x.new_empty((1, layer.weight.shape[1], out_h, out_w))
    for ry in range(min(s, out_h)):
        for rx in range(min(s, out_w)):
            # output row s*q + ry sums input rows q + c - j against taps k0 + s*j
            ky, kx = (ry + p) % s, (rx + p) % s
            taps = layer.weight[:, :, ky::s, kx::s].flip(2, 3).transpose(0, 1)
            jy, jx = taps.shape[2], taps.shape[3]
            qy, qx = len(range(ry, out_h, s)), len(range(rx, out_w, s))
            top, left = jy - 1 - (ry + p - ky) // s, jx - 1 - (rx + p - kx) // s
            padded = F.pad(
                x, (max(left, 0), max(qx + jx - 1 - left - w, 0), max(top, 0), max(qy + jy - 1 - top - h, 0))
            )[:, :, max(-top, 0) :, max(-left, 0) :]
            out[:, :, ry::s, rx::s] = _sum_products(padded, taps, layer.bias)[:, :, :qy, :qx]
    return out


def reference(net: IntegerNet, x: np.ndarray) -> np.ndarray:
    """The same computation in pure int64 numpy (slow; for tests): the definition of exactness."""
    a = np.clip(x.astype(np.int64), -net.input_limit, net.input_limit)
    for layer in net.layers:
        w = layer.weight.cpu().numpy().astype(np.int64)
        b = layer.bias.cpu().numpy().astype(np.int64)
        acc = _conv_transpose(a, w, layer) if layer.transposed else _conv(a, w, layer)
        acc += b[:, None, None]
        if layer.relu:
            shift = WEIGHT_BITS + layer.in_bits - ACT_BITS
            a = np.minimum(np.maximum(acc, 0) >> shift, ACT_LIMIT - 1)
        else:
            a = acc
    return a


def _conv(a: np.ndarray, w: np.ndarray, layer: IntegerLayer) -> np.ndarray:
    o, _, k, _ = w.shape
    p, s = layer.padding, layer.stride
    ap = np.pad(a, ((0, 0), (p, p), (p, p)))
    h = (ap.shape[1] - k) // s + 1
    wd = (ap.shape[2] - k) // s + 1
    out = np.zeros((o, h, wd), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            patch = ap[:, dy : dy + s * h : s, dx : dx + s * wd : s]
            out += np.einsum("oi,ihw->ohw", w[:, :, dy, dx], patch)
    return out


def _conv_transpose(a: np.ndarray, w: np.ndarray, layer: IntegerLayer) -> np.ndarray:
    _, o, k, _ = w.shape
    s, p, op = layer.stride, layer.padding, layer.output_padding
    _, h, wd = a.shape
    full_h, full_w = (h - 1) * s + k, (wd - 1) * s + k
    full = np.zeros((o, full_h + op, full_w + op), dtype=np.int64)
    for dy in range(k):
        for dx in range(k):
            full[:, dy : dy + s * h : s, dx : dx + s * wd : s] += np.einsum("io,ihw->ohw", w[:, :, dy, dx], a)
    out_h, out_w = (h - 1) * s - 2 * p + k + op, (wd - 1) * s - 2 * p + k + op
    return full[:, p : p + out_h, p : p + out_w]
