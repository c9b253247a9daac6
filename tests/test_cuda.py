"""CUDA paths: a file encoded on the CPU decodes on the GPU (and back) to the same quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aecompress import codec, passes
from aecompress.imageio import ImageData
from tests.conftest import photo_like

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_cpu_encoded_file_decodes_on_cuda_within_a_tenth_of_a_db() -> None:
    rgb = photo_like(200, 300)
    data = codec.encode(ImageData(rgb, None, "RGB"), device="cpu").data
    on_cpu = codec.decode(data, device="cpu").rgb
    on_gpu = codec.decode(data, device="cuda").rgb
    assert abs(_psnr(rgb, on_cpu) - _psnr(rgb, on_gpu)) < 0.1
    assert np.abs(on_cpu.astype(int) - on_gpu.astype(int)).max() <= 2


def test_cuda_encoded_file_decodes_on_cpu() -> None:
    rgb = photo_like(64, 80, seed=3)
    result = codec.encode(ImageData(rgb, None, "RGB"), device="cuda")
    assert result.device.type == "cuda"
    back = codec.decode(result.data, device="cpu").rgb
    cpu_version = codec.decode(codec.encode(ImageData(rgb, None, "RGB"), device="cpu").data, device="cpu").rgb
    assert abs(_psnr(rgb, back) - _psnr(rgb, cpu_version)) < 0.1


def test_hyperprior_files_parse_to_the_same_integers_on_cpu_and_cuda(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The scale classes come from the integer h_s, whatever device holds the model: a file
    encoded on the GPU parses to the same integers with the model on the CPU and on the GPU."""
    from aecompress import coding
    from aecompress import format as aecformat
    from aecompress.modelfile import save_model
    from tests.test_hyperprior import _tiny

    path = tmp_path / "hyper.pt"
    save_model(_tiny(), path, "hyper")
    rgb = photo_like(96, 128, seed=7)
    data = codec.encode(ImageData(rgb, None, "RGB"), model=str(path), quality=60, device="cuda").data
    aec = aecformat.unpack(data)
    found = {t.role: t for t in aec.tensors}
    z = coding.decode_tensor(found[coding.ROLE_HYPER_LATENTS], np.dtype("<i2"))
    parsed = []
    for device in ("cpu", "cuda"):
        net, _ = passes.model_on(path, torch.device(device))
        classes = net.scale_classes(z, (aec.header.latent_height, aec.header.latent_width))
        parsed.append(coding.decode_classed(found[coding.ROLE_LATENTS], classes, net.scale_class_count))
    assert np.array_equal(parsed[0], parsed[1])
    assert codec.decode(data, device="cpu", model=str(path)).rgb.shape == rgb.shape


def test_golden_context_file_restores_the_same_latents_with_the_model_on_cuda() -> None:
    """Format 6: the slice means and classes come from integer networks, so the integer latents
    the decoder restores do not depend on where the model sits (the gains that scale them, and the
    pixels, differ by float rounding)."""
    from pathlib import Path

    from aecompress import format as aecformat
    from aecompress.imageio import read_image
    from aecompress.latents import coder_for, gains_at, step_to_quality

    golden = Path(__file__).parent / "assets" / "golden"
    data = (golden / "v6-context.aec").read_bytes()
    aec = aecformat.unpack(data)
    restored = []
    for device in ("cpu", "cuda"):
        net, _ = passes.model_on(golden / "context-small.pt", torch.device(device))
        igain = gains_at(net, step_to_quality(aec.header.step))[1].cpu()
        y = coder_for(net).restore(net, aec).cpu().double() / igain[:, None, None].double()
        restored.append(torch.round(y * 256))
    assert torch.equal(restored[0], restored[1])
    assert len(torch.unique(restored[0])) > 10
    reference = read_image(golden / "v6-context.png").rgb
    back = codec.decode(data, device="cuda", model=str(golden / "context-small.pt")).rgb
    assert np.abs(back.astype(int) - reference.astype(int)).max() <= 2


def test_context_file_encoded_on_cuda_decodes_on_cpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aecompress.modelfile import save_model
    from tests.conftest import tiny_context

    path = tmp_path / "ctx.pt"
    save_model(tiny_context(), path, "ctx")
    rgb = photo_like(64, 96, seed=5)
    on_gpu = codec.encode(ImageData(rgb, None, "RGB"), model=str(path), quality=70, device="cuda").data
    on_cpu = codec.encode(ImageData(rgb, None, "RGB"), model=str(path), quality=70, device="cpu").data
    a = codec.decode(on_gpu, device="cpu", model=str(path)).rgb
    b = codec.decode(on_cpu, device="cpu", model=str(path)).rgb
    assert abs(_psnr(rgb, a) - _psnr(rgb, b)) < 0.1
