"""The mean-and-scale hyperprior with channel-slice context (``context``): its warm start from a
scale hyperprior and its training pass."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aecompress import codec, coding, passes
from aecompress import format as aecformat
from aecompress.errors import FormatError, ModelError
from aecompress.imageio import ImageData
from aecompress.latents import DEAD_ZONE, SliceContextCoder
from aecompress.modelfile import read_info, save_model
from aecompress.nn import build
from aecompress.nn.context import ContextCodec
from aecompress.nn.models import SCALE_CLASSES
from aecompress.pack import pack_file
from aecompress.train import make_config, train
from tests.conftest import REPO, photo_like, tiny_context, tiny_hyperprior


def _warm_started() -> tuple[torch.nn.Module, ContextCodec]:
    base = tiny_hyperprior()
    config = {"channels": 8, "hyper_channels": 8, "hyper_latent_channels": 8, "context_channels": 8}
    model = build("context", config)
    assert isinstance(model, ContextCodec)
    model.adopt(base, None)
    return base, model.eval()


def test_warm_start_begins_where_the_hyperprior_was() -> None:
    base, model = _warm_started()
    torch.manual_seed(3)
    y = torch.randn(1, 100, 12, 16) * 4
    with torch.no_grad():
        z_base = base.h_a(y.abs())
        z = model.h_a(torch.cat([y.abs(), y], dim=1))
        torch.testing.assert_close(z, z_base, rtol=1e-5, atol=1e-5)
        zq = torch.round(z_base)
        log2, mean = model.hyper_params(zq, (12, 16))
        torch.testing.assert_close(log2, base.hyper_scales(zq, (12, 16)))
        assert torch.count_nonzero(mean) == 0
        decoded = [y[:, : model.slice_width]]
        log2_1, mean_1 = model.slice_params(1, log2, mean, decoded)
        torch.testing.assert_close(log2_1, log2[:, 20:40])
        assert torch.count_nonzero(mean_1) == 0
    n = base.log_gain.shape[0]
    torch.testing.assert_close(model.log_gain[:n], base.log_gain)
    # the extra rate point continues the last step of the gains, per log-lambda
    lam = torch.tensor(model.lambdas).log()
    slope = (base.log_gain[n - 1] - base.log_gain[n - 2]) / (lam[n - 1] - lam[n - 2])
    torch.testing.assert_close(model.log_gain[n], base.log_gain[n - 1] + slope * (lam[n] - lam[n - 1]))


def test_training_pass_reaches_the_context_networks() -> None:
    _, model = _warm_started()
    model.train()
    torch.manual_seed(0)
    out = model(torch.rand(2, 3, 64, 64))
    assert out.x_hat.shape == (2, 3, 64, 64)
    assert out.lmbda is not None and out.lmbda.shape == (2,)
    assert torch.isfinite(out.bits) and out.bits > 0
    (out.bits + out.x_hat.square().sum()).backward()
    for net in model.context:
        last = net[-1]
        assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0
    first = model.h_s[4]
    assert first.weight.grad is not None and first.weight.grad[100:].abs().sum() > 0


def test_slices_must_divide_the_channels() -> None:
    with pytest.raises(ModelError, match="slices"):
        build("context", {"channels": 8, "slices": 3})


def test_files_parse_to_the_encoders_integers_slice_by_slice(tmp_path: Path) -> None:
    """Encode, then parse here and in fresh processes with 1 and 2 threads: the decoder's
    reconstructed latents are the encoder's own (means and classes from integers only)."""
    model = tiny_context()
    path = tmp_path / "ctx.pt"
    save_model(model, path, "ctx", {"note": "test model"})
    net, _ = passes.model_on(path, torch.device("cpu"))
    image = ImageData(photo_like(64, 96, seed=4), None, "RGB")
    data = codec.encode(image, str(path), 70, "cpu").data
    aec = aecformat.unpack(data)
    assert aec.header.version == 6
    assert sorted(t.role for t in aec.tensors) == [coding.ROLE_HYPER_LATENTS] + [
        coding.ROLE_SLICE + k for k in range(5)
    ]
    coder = SliceContextCoder()
    latents = passes.analyse(net, image.rgb, torch.device("cpu"))
    _, symbols, classes, _ = coder._integers(net, latents, 70.0)
    assert any(len(np.unique(c)) > 3 for c in classes)  # the classes vary
    restored = coder.restore(net, aec)
    igain = net.gains(torch.tensor([net.rate_position(70.0)]))[1][0]
    # the encoder's reconstruction: its residuals plus the same integer means
    z = coding.decode_tensor(
        next(t for t in aec.tensors if t.role == coding.ROLE_HYPER_LATENTS), np.dtype("<i2")
    )
    log2_acc, mean_acc = net.integer_hyper(z, latents.shape[1:])
    decoded: list[np.ndarray] = []
    for k, s in enumerate(symbols):
        part = slice(k * net.slice_width, (k + 1) * net.slice_width)
        _, mean = net.integer_slice(k, log2_acc[part], mean_acc[part], decoded)
        decoded.append(s.astype(np.int64) * 256 + (mean >> 12))
    encoders = torch.from_numpy((np.concatenate(decoded) / 256.0).astype(np.float32)) * igain[:, None, None]
    torch.testing.assert_close(restored, encoders, rtol=0, atol=0)
    # each latent within half a step of the encoder's own, or within its class's dead zone
    error = (
        restored / igain[:, None, None]
        - latents * net.gains(torch.tensor([net.rate_position(70.0)]))[0][0][:, None, None]
    ).abs()
    zone = np.zeros(max(len(DEAD_ZONE), SCALE_CLASSES))
    zone[: len(DEAD_ZONE)] = DEAD_ZONE
    allowed = torch.from_numpy(0.5 + zone[np.concatenate(classes)]).float()
    assert bool((error <= allowed + 1e-4).all())
    zeroed = torch.from_numpy(np.concatenate(symbols) == 0) & (error > 0.5 + 1e-4)
    assert bool(zeroed.any())  # the dead zone took some latents to zero
    file = tmp_path / "x.aec"
    file.write_bytes(data)
    script = (
        "import sys, hashlib, torch; from aecompress import passes, format as f; "
        "from aecompress.latents import coder_for; "
        "net, _ = passes.model_on(sys.argv[2], torch.device('cpu')); "
        "y = coder_for(net).restore(net, f.unpack(open(sys.argv[1], 'rb').read())); "
        "print(hashlib.sha256(y.numpy().tobytes()).hexdigest())"
    )
    here = hashlib.sha256(restored.numpy().tobytes()).hexdigest()
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        args = [sys.executable, "-c", script, str(file), str(path)]
        out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, check=True)
        assert out.stdout.strip() == here
    back = codec.decode(data, "cpu", str(path))
    assert back.rgb.shape == (64, 96, 3)


def test_a_slice_missing_or_misshapen_is_refused(tmp_path: Path) -> None:
    model = tiny_context()
    path = tmp_path / "ctx.pt"
    save_model(model, path, "ctx", {"note": "test model"})
    data = codec.encode(ImageData(photo_like(32, 48), None, "RGB"), str(path), 50, "cpu").data
    aec = aecformat.unpack(data)
    net, _ = passes.model_on(path, torch.device("cpu"))
    kept = tuple(t for t in aec.tensors if t.role != coding.ROLE_SLICE + 4)
    dropped = dataclasses.replace(aec, tensors=kept)
    with pytest.raises(FormatError, match="latent slices"):
        SliceContextCoder().restore(net, dropped)
    with pytest.raises(FormatError):  # the container itself refuses slices that do not add up
        aecformat.pack(aec.header, list(dropped.tensors))


def test_batches_parse_on_threads_to_what_one_thread_decodes(tmp_path: Path) -> None:
    """The decode pipeline (threads parse the next batches while the network decodes this one)
    gives the same pixels as parsing in turn, and a file that fails to parse keeps its error in
    its place without stopping its batch."""
    from aecompress.pack import decode_batches

    path = tmp_path / "ctx.pt"
    save_model(tiny_context(), path, "ctx", {"note": "test model"})
    net, _ = passes.model_on(path, torch.device("cpu"))
    files = [
        aecformat.unpack(
            codec.encode(ImageData(photo_like(32, 48, seed=s), None, "RGB"), str(path), 60, "cpu").data
        )
        for s in range(5)
    ]
    broken = dataclasses.replace(files[2], tensors=files[2].tensors[:-1])
    files[2] = broken
    runs = []
    for workers in (1, 3):
        batches = list(decode_batches(net, files, torch.device("cpu"), 2, workers))
        assert [len(b) for b in batches] == [2, 2, 1]
        runs.append([item for b in batches for item in b])
    for one, threaded in zip(*runs, strict=True):
        if isinstance(one, ImageData):
            assert isinstance(threaded, ImageData)
            np.testing.assert_array_equal(one.rgb, threaded.rgb)
        else:
            assert isinstance(one, FormatError) and isinstance(threaded, FormatError)
    assert [isinstance(item, FormatError) for item in runs[1]] == [False, False, True, False, False]
    first = codec.encode(ImageData(photo_like(32, 48, seed=0), None, "RGB"), str(path), 60, "cpu").data
    single = codec.decode(first, "cpu", str(path))
    assert isinstance(runs[1][0], ImageData) and np.abs(single.rgb.astype(int) - runs[1][0].rgb).max() <= 1


def test_training_a_context_model_writes_validation_files(tmp_path: Path) -> None:
    """The training loop's validation codes real files with the slice-context coder."""
    data = tmp_path / "images"
    data.mkdir()
    for i in range(3):
        Image.fromarray(photo_like(64, 64, seed=i)).save(data / f"{i}.png")
    base = tmp_path / "hyper.pt"
    save_model(tiny_hyperprior(), base, "hyper", {"note": "test model"})
    cfg = make_config(data=[str(data)], output=str(tmp_path / "ctx.pt"), arch="context", init=base,
                      channels=8, steps=2, batch_size=2, crop=32, lr=1e-4, val=[str(data)], val_every=2,
                      checkpoint_every=2, log_every=1, device="cpu")  # fmt: skip
    out = train(cfg)
    info = read_info(out)
    assert info.arch == "context" and info.card["validation"]["val_bpp"] > 0


def test_integer_passes_in_tiles_are_the_whole_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large image's context passes run in tiles with a halo (the encoder's spans the slices'
    chained contexts, the decoder's one context's reach): with tiles of 3 latent positions the
    file, its integers and the restored latents are the one-tile ones, bit for bit."""
    import aecompress.latents as latents_module

    model = tiny_context(seed=5)
    with torch.no_grad():
        for net in model.context:  # strong contexts, so a cut edge would show in the integers
            for layer in (net[0], net[2], net[4]):
                layer.weight.normal_(0, 1.0)
    path = tmp_path / "ctx.pt"
    save_model(model, path, "ctx", {"note": "test model"})
    net, _ = passes.model_on(path, torch.device("cpu"))
    image = ImageData(photo_like(96, 136, seed=6), None, "RGB")
    latents = passes.analyse(net, image.rgb, torch.device("cpu"))
    coder = SliceContextCoder()
    whole_file = codec.encode(image, str(path), 90, "cpu").data
    whole = coder._integers(net, latents, 90.0)
    whole_restored = coder.restore(net, aecformat.unpack(whole_file))
    monkeypatch.setattr(latents_module, "CONTEXT_TILE", 3)
    assert len(list(latents_module._context_tiles(*latents.shape[1:], 4))) == 4 * 6
    tiled = coder._integers(net, latents, 90.0)
    for a, b in zip(whole[1] + whole[2], tiled[1] + tiled[2], strict=True):
        np.testing.assert_array_equal(a, b)
    assert codec.encode(image, str(path), 90, "cpu").data == whole_file
    torch.testing.assert_close(
        coder.restore(net, aecformat.unpack(whole_file)), whole_restored, rtol=0, atol=0
    )


def test_estimates_follow_the_exact_integers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimate (float networks, what a family's hand-over searches with) is the order-0
    entropy of the exact integers within 1%, tiled or not, and follows the file's size."""
    import aecompress.latents as latents_module

    path = tmp_path / "ctx.pt"
    torch.manual_seed(2)  # the layers the tiny model does not set itself
    save_model(tiny_context(seed=2), path, "ctx", {"note": "test model"})
    net, _ = passes.model_on(path, torch.device("cpu"))
    image = ImageData(photo_like(96, 136, seed=7), None, "RGB")
    latents = passes.analyse(net, image.rgb, torch.device("cpu"))
    coder = SliceContextCoder()
    sizes = []
    for quality in (50.0, 75.0, 100.0):
        z, symbols, classes, _ = coder._integers(net, latents, quality)
        exact = coding.encode_tensor(z, role=coding.ROLE_HYPER_LATENTS).coded_bytes + sum(
            coding.classed_entropy_bytes(s, c, net.scale_class_count)
            for s, c in zip(symbols, classes, strict=True)
        )
        estimate = coder.estimate(net, latents, quality)
        assert exact > 500 and abs(estimate / exact - 1) < 0.01, (quality, estimate, exact)
        with monkeypatch.context() as patch:
            patch.setattr(latents_module, "CONTEXT_TILE", 5)
            assert abs(coder.estimate(net, latents, quality) / estimate - 1) < 1e-3
        sizes.append((estimate, sum(t.coded_bytes for t in coder.code(net, latents, quality).tensors)))
    assert sizes[0][0] < sizes[1][0] < sizes[2][0] and sizes[0][1] < sizes[1][1] < sizes[2][1]


def test_residuals_past_a_byte_widen_only_their_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder keeps residuals in a byte until a value needs two: a slice that overflows in
    its last tile widens with its earlier tiles' values intact, a slice that never does stays a
    byte, and the file (int16 then) restores the large values."""
    import aecompress.latents as latents_module

    model = tiny_context(seed=5)
    path = tmp_path / "ctx.pt"
    save_model(model, path, "ctx", {"note": "test model"})
    net, _ = passes.model_on(path, torch.device("cpu"))
    image = ImageData(photo_like(96, 136, seed=6), None, "RGB")
    latents = passes.analyse(net, image.rgb, torch.device("cpu")).clone()
    coder = SliceContextCoder()
    monkeypatch.setattr(latents_module, "CONTEXT_TILE", 3)
    assert [s.dtype for s in coder._integers(net, latents, 90.0)[1]] == [np.int8] * 5
    latents[40:60, -2:, -2:] += 20.0  # slice 2, the last tile only
    tiled = coder._integers(net, latents, 90.0)[1]
    assert int(np.abs(tiled[2]).max()) > 127
    for s in tiled:
        assert s.dtype == (np.int16 if int(np.abs(s).max()) > 127 else np.int8)
    monkeypatch.setattr(latents_module, "CONTEXT_TILE", 128)
    for a, b in zip(coder._integers(net, latents, 90.0)[1], tiled, strict=True):
        np.testing.assert_array_equal(a, b)
    data, _ = pack_file(path, image, latents, 90.0, 90.0, 0, torch.device("cpu"))
    aec = aecformat.unpack(data)
    assert aec.header.dtype == np.dtype("<i2")
    gain, igain = net.gains(torch.tensor([net.rate_position(90.0)]))[:2]
    restored = coder.restore(net, aec) / igain[0][:, None, None]
    error = (restored - latents * gain[0][:, None, None]).abs().max()
    assert float(error) <= 0.5 + float(DEAD_ZONE.max()) + 1e-3  # rounding, or a class's dead zone
