"""The hyperprior architecture: exact integer scale classes, files that round-trip, warm-start
training through the CLI, and a variable rate that rises with -q."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from aecompress import codec, coding, passes
from aecompress import format as aecformat
from aecompress.cli import app
from aecompress.errors import ModelError
from aecompress.imageio import ImageData
from aecompress.latents import ScaleClassCoder
from aecompress.modelfile import read_info, save_model
from aecompress.nn import build
from aecompress.nn.integer import IntegerNet, reference
from tests.conftest import REPO, photo_like, tiny_context, tiny_hyperprior

runner = CliRunner()


def _tiny(seed: int = 0) -> torch.nn.Module:
    return tiny_hyperprior(seed)


@pytest.fixture(scope="module")
def hyper_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hyper") / "hyper.pt"
    save_model(_tiny(), path, "hyper", {"note": "test model"})
    return path


def test_integer_hyper_synthesis_matches_its_int64_definition() -> None:
    net = IntegerNet(_tiny().h_s)
    rng = np.random.default_rng(0)
    for z in (
        rng.integers(-6, 7, size=(8, 5, 7)),
        rng.integers(-32768, 32768, size=(8, 3, 2)),  # hostile extremes: still exact
        np.zeros((8, 1, 1), np.int64),
    ):
        np.testing.assert_array_equal(net(z), reference(net, z))


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "output_padding"),
    [(5, 2, 2, 1), (3, 2, 1, 1), (4, 2, 1, 0), (3, 1, 1, 0), (5, 3, 1, 2)],
)
def test_integer_layers_by_phases_and_bands_match_the_int64_definition(
    kernel: int, stride: int, padding: int, output_padding: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast float64 paths (a transposed layer as one convolution per output phase; unfolded
    row bands, made tiny here so that many bands run) sum exactly what the definition sums."""
    import aecompress.nn.integer as integer

    torch.manual_seed(kernel * 10 + stride)
    net = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(6, 5, kernel, stride, padding, output_padding), torch.nn.ReLU(),
        torch.nn.Conv2d(5, 7, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(7, 4, 1),
    )  # fmt: skip
    exact = IntegerNet(net, products=True)
    rng = np.random.default_rng(kernel)
    for bands in (integer.BAND_VALUES, 64):
        monkeypatch.setattr(integer, "BAND_VALUES", bands)
        for shape in ((6, 5, 7), (6, 1, 1), (6, 9, 2)):
            z = rng.integers(-3000, 3000, size=shape)
            np.testing.assert_array_equal(exact(z), reference(exact, z))


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "output_padding"),
    [(5, 2, 2, 1), (3, 2, 1, 1), (4, 2, 1, 0), (3, 1, 1, 0), (5, 3, 1, 2)],
)
def test_integer_net_in_tiles_is_the_whole_net_exactly(
    kernel: int, stride: int, padding: int, output_padding: int
) -> None:
    """Tiles with their halo, cropped and laid side by side, are the whole accumulator bit for
    bit, for tiles down to one input row, and for a net that cannot be tiled (a strided conv);
    so is any region computed from the input it reaches (``IntegerNet.region``)."""
    torch.manual_seed(kernel + stride)
    net = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(6, 5, kernel, stride, padding, output_padding), torch.nn.ReLU(),
        torch.nn.ConvTranspose2d(5, 5, 3, 2, 1, 1), torch.nn.ReLU(), torch.nn.Conv2d(5, 4, 3, padding=1),
    )  # fmt: skip
    exact = IntegerNet(net)
    z = np.random.default_rng(kernel).integers(-2000, 2000, size=(6, 9, 11))
    whole = exact(z)
    np.testing.assert_array_equal(whole, reference(exact, z))
    for tile in (1, 2, 3, 5, 8, 20):
        pieces = np.full(whole.shape, np.iinfo(np.int64).min)
        covered = np.zeros(whole.shape[1:], np.int64)
        for rows, cols, acc in exact.tiles(z, tile):
            pieces[:, rows, cols] = acc
            covered[rows, cols] += 1
        assert (covered == 1).all(), f"tile {tile}: every output once"
        np.testing.assert_array_equal(pieces, whole)
    rng = np.random.default_rng(stride)
    for _ in range(20):  # any region, from the input it reaches alone
        r0, c0 = rng.integers(0, whole.shape[1]), rng.integers(0, whole.shape[2])
        rows = range(r0, rng.integers(r0 + 1, whole.shape[1] + 1))
        cols = range(c0, rng.integers(c0 + 1, whole.shape[2] + 1))
        np.testing.assert_array_equal(exact.region(z, rows, cols), whole[:, r0 : rows.stop, c0 : cols.stop])
    np.testing.assert_array_equal(exact.selecting([3, 0])(z), whole[[3, 0]])  # some outputs only
    strided = IntegerNet(torch.nn.Sequential(torch.nn.Conv2d(6, 4, 3, 2, 1)))
    assert strided.upsampling() is None
    assert [(r, c) for r, c, _ in strided.tiles(z, 2)] == [(slice(0, 5), slice(0, 6))]


def test_scale_classes_in_tiles_are_the_whole_images(monkeypatch: pytest.MonkeyPatch) -> None:
    import aecompress.nn.models as models

    model = _tiny()
    z = np.random.default_rng(2).integers(-8, 9, size=(8, 7, 10))
    whole = model.scale_classes(z, (27, 37))
    monkeypatch.setattr(models, "HYPER_TILE", 3)
    np.testing.assert_array_equal(model.scale_classes(z, (27, 37)), whole)


@pytest.mark.parametrize("make", [tiny_hyperprior, tiny_context])
def test_hyper_analysis_in_tiles_gives_the_whole_images_hyper_latents(
    make: Callable[[int], torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    """h_a in tiles of 8 latents with its halo gives the whole image's z; a halo one stride too
    short does not (the halo is what makes it right)."""
    import aecompress.latents as latents

    net = make(3)
    y = torch.randn(100, 37, 29) * 4

    def z_of() -> np.ndarray:
        return latents.hyper_latents(net, latents.gain_scaled(net, y, 70))

    whole = z_of()
    assert latents._hyper_halo(net) == 8  # reach 1 + 2 + 2 * 2 latents, up to the stride 4
    monkeypatch.setattr(latents, "HYPER_TILE", 8)
    np.testing.assert_array_equal(z_of(), whole)
    monkeypatch.setattr(latents, "_hyper_halo", lambda model: 4)
    assert (z_of() != whole).any()


def test_gain_scaled_parts_are_the_whole_products_values() -> None:
    """The latents are scaled a part at a time where they are read; every part, and the integers
    rounded from them, are what scaling the whole tensor at once gives."""
    import aecompress.latents as latents

    net = tiny_hyperprior(3)
    y = torch.randn(100, 37, 29) * 4
    gain = latents.gains_at(net, 63.0)[0]
    whole = y * gain[:, None, None]
    scaled = latents.gain_scaled(net, y, 63.0)
    assert scaled.shape == (100, 37, 29)
    part = scaled[latents._index(range(5, 30), range(3, 17))]
    assert torch.equal(part, whole[:, 5:30, 3:17])
    assert torch.equal(scaled[10:20], whole[10:20])
    np.testing.assert_array_equal(latents.quantize(scaled, 1.0), latents.quantize(whole, 1.0))


def test_lazily_restored_latents_are_the_restored_floats_and_decode_the_same_pixels(
    hyper_model: Path,
) -> None:
    """A decode keeps the parsed integers (the header's dtype) with their inverse gain and
    dequantizes a tile at a time: every part is the float the whole restore holds, and the
    tiled synthesis of one is pixel for pixel that of the other."""
    from aecompress.latents import GainScaled, coder_for

    image = ImageData(photo_like(90, 120, seed=6), None, "RGB")
    data = codec.encode(image, model=str(hyper_model), quality=70, device="cpu").data
    aec = aecformat.unpack(data)
    net, _ = passes.model_on(hyper_model, torch.device("cpu"))
    coder = coder_for(net)
    lazy = coder.restore_lazily(net, aec)
    assert isinstance(lazy, GainScaled) and lazy.latents.dtype == torch.int8
    whole = coder.restore(net, aec)
    assert whole.dtype == torch.float32 and torch.equal(lazy[:], whole)
    assert torch.equal(lazy[:, 3:9, 2:7], whole[:, 3:9, 2:7])
    size = (image.rgb.shape[0], image.rgb.shape[1])
    for tile in (4, None):
        np.testing.assert_array_equal(
            passes.synthesize(net, lazy, size, torch.device("cpu"), tile),
            passes.synthesize(net, whole, size, torch.device("cpu"), tile),
        )


def test_scale_classes_do_not_depend_on_threads_or_float_settings() -> None:
    model = _tiny()
    z = np.random.default_rng(1).integers(-8, 9, size=(8, 6, 9))
    threads = torch.get_num_threads()
    runs = []
    try:
        for n, dtype in ((1, torch.float32), (2, torch.float64), (1, torch.float16)):
            torch.set_num_threads(n)
            previous = torch.get_default_dtype()
            torch.set_default_dtype(dtype if dtype != torch.float16 else torch.float32)
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.float16):
                    runs.append(model.scale_classes(z, (22, 33)))
            finally:
                torch.set_default_dtype(previous)
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    assert len(np.unique(runs[0])) > 3  # the check has teeth: many classes in use


def test_files_round_trip_and_rise_with_quality(hyper_model: Path) -> None:
    image = ImageData(photo_like(70, 90, seed=3), None, "RGB")
    sizes = []
    for quality in (0, 50, 100):
        result = codec.encode(image, model=str(hyper_model), quality=quality, device="cpu")
        aec = aecformat.unpack(result.data)
        roles = sorted(t.role for t in aec.tensors)
        assert roles == [coding.ROLE_LATENTS, coding.ROLE_HYPER_LATENTS]
        latents = next(t for t in aec.tensors if t.role == coding.ROLE_LATENTS)
        assert latents.scheme == coding.SCHEME_GROUPED_CLASSES and aec.header.version == 5
        back = codec.decode(result.data, device="cpu", model=str(hyper_model))
        assert back.rgb.shape == image.rgb.shape
        sizes.append(len(result.data))
    assert sizes[0] < sizes[1] < sizes[2]


def test_decoded_integers_are_the_encoders(hyper_model: Path) -> None:
    """Parse, here and in fresh processes with other thread settings: exactly the integers the
    encoder quantized (scaled back by the inverse gain, as the synthesis takes them)."""
    import hashlib

    from aecompress.latents import coder_for

    image = ImageData(photo_like(64, 96, seed=5), None, "RGB")
    data = codec.encode(image, model=str(hyper_model), quality=60, device="cpu").data
    file = Path(str(hyper_model) + ".sample.aec")
    file.write_bytes(data)
    script = (
        "import sys, hashlib, torch; from aecompress import codec, passes, format as f; "
        "from aecompress.latents import coder_for; "
        "net, _ = passes.model_on(codec.resolve(sys.argv[2]), torch.device('cpu')); "
        "y = coder_for(net).restore(net, f.unpack(open(sys.argv[1], 'rb').read())); "
        "print(hashlib.sha256(y.numpy().tobytes()).hexdigest())"
    )
    net, _ = passes.model_on(hyper_model, torch.device("cpu"))
    parsed = aecformat.unpack(data)
    roles = {t.role: t for t in parsed.tensors}
    assert roles[coding.ROLE_LATENTS].dictionaries == coding.SCALE_CLASS_DICTIONARIES
    assert len(coding.dictionaries(coding.SCALE_CLASS_DICTIONARIES)) <= 3 * net.scale_class_count + 2
    here = coder_for(net).restore(net, parsed).numpy()
    latents = passes.analyse(net, image.rgb, torch.device("cpu"), None)
    _, y, _ = ScaleClassCoder()._integers(net, latents, 60.0)
    igain = net.gains(torch.tensor([net.rate_position(60.0)]))[1][0]
    encoders = (torch.from_numpy(y.astype(np.float32)) * igain[:, None, None]).numpy()
    np.testing.assert_array_equal(here, encoders)
    hashes = {hashlib.sha256(encoders.tobytes()).hexdigest()}
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        out = subprocess.run(
            [sys.executable, "-c", script, str(file), str(hyper_model)],
            capture_output=True, text=True, env=env, cwd=REPO, check=True,
        )  # fmt: skip
        hashes.add(out.stdout.strip())
    assert len(hashes) == 1


def test_hostile_side_information_is_refused(hyper_model: Path) -> None:
    image = ImageData(photo_like(40, 48, seed=6), None, "RGB")
    data = codec.encode(image, model=str(hyper_model), quality=50, device="cpu").data
    aec = aecformat.unpack(data)
    latents = next(t for t in aec.tensors if t.role == coding.ROLE_LATENTS)
    hyper = next(t for t in aec.tensors if t.role == coding.ROLE_HYPER_LATENTS)
    import dataclasses

    from tests.fuzzing import replace_chunk

    for tensors in (
        [latents],  # no side information
        [latents, dataclasses.replace(hyper, shape=(8, 99, 99))],
        [dataclasses.replace(latents, frames=latents.frames[:-3], raw_sizes=latents.raw_sizes[:-3]), hyper],
    ):
        bad = replace_chunk(data, b"TNSR", aecformat.tensor_table(tensors))
        with pytest.raises(aecformat.FormatError):
            codec.decode(bad, device="cpu", model=str(hyper_model))


def test_train_cli_warm_starts_a_hyperprior_from_a_factorized_model(tmp_path: Path, models_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(photo_like(48, 64, seed=i)).save(data / f"img{i}.png")
    out = tmp_path / "hp.pt"
    result = runner.invoke(
        app,
        [
            "train", str(data), "-o", str(out), "--arch", "hyperprior",
            "--init", str(models_dir / "default.pt"), "--steps", "3", "--batch-size", "2", "--crop", "32",
            "--device", "cpu", "--val", str(data),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = read_info(out)
    assert info.arch == "hyperprior" and info.config["channels"] == 8  # the init's transforms
    assert info.card["validation"]["val_bpp"] > 0
    image = ImageData(photo_like(40, 40), None, "RGB")
    back = codec.decode(codec.encode(image, model=str(out), device="cpu").data, device="cpu", model=str(out))
    assert back.rgb.shape == (40, 40, 3)


def test_quality_reaches_past_the_trained_lambdas_on_a_log_linear_gain_line() -> None:
    model = _tiny()
    lo, hi = model.config["rate_range"]
    assert model.rate_position(0) == lo < 0 and model.rate_position(100) == hi > model.levels - 1
    positions = torch.tensor([lo, 0.0, 1.0, hi - 1.0, model.levels - 1.0, hi])
    log_gain = model.gains(positions)[0].log().detach()
    below = (log_gain[1] - log_gain[0]) / (0.0 - lo)
    np.testing.assert_allclose(below.numpy(), (log_gain[2] - log_gain[1]).numpy(), rtol=1e-4, atol=1e-5)
    above = (log_gain[5] - log_gain[4]) / (hi - (model.levels - 1.0))
    inside = (log_gain[4] - log_gain[3]) / (model.levels - 1.0 - (hi - 1.0))
    np.testing.assert_allclose(above.numpy(), inside.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="rate_range"):
        build("hyperprior", {"channels": 8, "rate_range": [2.0, 1.0]})


def test_warm_start_keeps_the_init_stride_sets_the_rates_and_freezes_inherited_parts(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(photo_like(48, 64, seed=i)).save(data / f"img{i}.png")
    torch.manual_seed(3)
    base = build("factorized", {"channels": 8, "latent_channels": 100})
    base.config.pop("downsamples")  # as older model files, which leave the default stride out
    init = tmp_path / "base.pt"
    save_model(base, init, "base", {"lambda": 0.004})
    out = tmp_path / "low.pt"
    common = ["--steps", "3", "--batch-size", "2", "--crop", "32", "--device", "cpu",
              "--checkpoint-every", "1"]  # fmt: skip
    frozen = ["g_a", "g_s", "log_gain", "log_igain"]
    result = runner.invoke(
        app,
        ["train", str(data), "-o", str(out), "--arch", "hyperprior", "--init", str(init),
         "--lambdas", "0.001,0.004,0.016", "--rate-range=-0.5,2.5", *common,
         *(arg for prefix in frozen for arg in ("--freeze", prefix))],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = read_info(out)
    assert info.config["downsamples"] == 4  # the init's stride, not the hyperprior's default of 8
    assert info.config["lambdas"] == [0.001, 0.004, 0.016] and info.config["rate_range"] == [-0.5, 2.5]
    assert info.card["frozen"] == frozen
    start = load_state(init)
    trained = load_state(out)
    transforms = [n for n in start if n.startswith(("g_a", "g_s"))]
    assert transforms
    for name in transforms:  # the frozen transforms are the init's, bit for bit
        assert torch.equal(trained[name], start[name]), name
    expected = 0.5 * torch.log(torch.tensor([0.001, 0.004, 0.016]) / 0.004)
    torch.testing.assert_close(trained["log_gain"], expected[:, None].expand(3, 100))
    state = torch.load(str(out) + ".ckpt", map_location="cpu", weights_only=True)
    hyper_tensors = [n for n in trained if n.startswith(("h_a", "h_s", "z_density"))]
    assert len(state["optimizer"]["state"]) == len(hyper_tensors)  # only the new parts learn

    joint = tmp_path / "joint.pt"  # then everything trains, from the fitted hyperprior; without
    result = runner.invoke(app, ["train", str(data), "-o", str(joint), "--init", str(out), *common])
    assert result.exit_code == 0, result.output  # --arch, fine-tuning keeps the init's architecture
    after = load_state(joint)
    assert read_info(joint).arch == "hyperprior" and read_info(joint).config == info.config
    assert not torch.equal(after["g_a.0.weight"], trained["g_a.0.weight"])

    narrow = tmp_path / "narrow.pt"  # a narrower h_s (a cheaper parse) fitted to the rest, frozen
    others = ["g_a", "g_s", "h_a", "z_density", "log_gain", "log_igain"]
    result = runner.invoke(
        app,
        ["train", str(data), "-o", str(narrow), "--init", str(joint), "--synthesis-channels", "5", *common,
         *(arg for prefix in others for arg in ("--freeze", prefix))],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_info(narrow).config == {**info.config, "synthesis_channels": 5}
    fitted = load_state(narrow)
    assert fitted["h_s.0.weight"].shape[1] == 5 and fitted["h_s.4.weight"].shape == (100, 5, 1, 1)
    for name in after:
        if not name.startswith("h_s"):
            assert torch.equal(fitted[name], after[name]), name
    image = ImageData(photo_like(40, 56, seed=4), None, "RGB")
    coded = codec.encode(image, model=str(narrow), quality=60, device="cpu").data
    assert codec.decode(coded, device="cpu", model=str(narrow)).rgb.shape == (40, 56, 3)

    for bad, message in (
        (["--arch", "hyperprior", "--freeze", "nothing"], "names no parameters"),
        (["--arch", "hyperprior", "--lambdas", "0.01,0.001"], "increasing"),
        (["--arch", "hyperprior", "--rate-range", "a,b"], "numbers separated by commas"),
        (["--lambdas", "0.001,0.01"], "apply to variable-rate models"),
        (["--synthesis-channels", "8"], "apply to variable-rate models"),
    ):
        result = runner.invoke(app, ["train", str(data), "-o", str(tmp_path / "x.pt"), *common, *bad])
        assert result.exit_code == 1 and message in result.output, result.output


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A model file's weights as the network loads them (float32)."""
    from aecompress.modelfile import load_model

    return {k: v.detach().clone() for k, v in load_model(path)[0].state_dict().items()}


def test_float_scale_classes_are_the_exact_ones_give_or_take_a_boundary() -> None:
    """``exact=False`` (estimates only) runs h_s in floats: classes may differ by one where a
    scale sits on a boundary, and hardly ever."""
    model = tiny_hyperprior(seed=2)
    rng = np.random.default_rng(0)
    z = rng.integers(-6, 7, size=(8, 5, 6)).astype(np.int16)
    exact = model.scale_classes(z, (20, 24))
    rough = model.scale_classes(z, (20, 24), exact=False)
    assert exact.shape == rough.shape == (model.latent_channels, 20, 24)
    assert np.abs(exact.astype(int) - rough.astype(int)).max() <= 1
    assert (exact == rough).mean() > 0.95
    assert len(np.unique(exact)) > 3  # the classes spread, so the comparison means something


def test_quantize_widens_to_int16_only_when_a_value_needs_it() -> None:
    """Integers stay a byte a latent until a channel past the first chunk needs two; then every
    value, earlier chunks' included, is what rounding the whole tensor gives."""
    import aecompress.latents as latents

    y = torch.randn(20, 9, 7) * 30
    small = latents.quantize(y, 2.0)
    assert small.dtype == np.int8
    np.testing.assert_array_equal(small, torch.round(y / 2.0).numpy().astype(np.int64))
    y[17, 4, 3] = 1000.0  # in the last chunk of channels
    wide = latents.quantize(y, 2.0)
    assert wide.dtype == np.int16
    np.testing.assert_array_equal(wide, torch.round(y / 2.0).numpy().astype(np.int64))
    assert latents.quantize(torch.zeros(0, 4, 4), 1.0).dtype == np.int8


def test_dead_zone_zeroes_only_small_latents_of_the_lowest_scale_classes() -> None:
    """With classes, a latent of class k < len(DEAD_ZONE) rounds to 0 until |y| reaches
    0.5 + DEAD_ZONE[k]; every other latent is plain rounding, in whichever chunk it falls."""
    import aecompress.latents as latents

    rng = np.random.default_rng(5)
    y = torch.from_numpy(rng.uniform(-2.5, 2.5, size=(20, 9, 7)).astype(np.float32))
    classes = rng.integers(0, 8, size=(20, 9, 7)).astype(np.uint8)
    plain = torch.round(y).numpy().astype(np.int64)
    zoned = latents.quantize(y, 1.0, classes)
    limit = 0.5 + np.concatenate([latents.DEAD_ZONE, np.zeros(8)])[classes]
    inside = np.abs(y.numpy()) < limit
    np.testing.assert_array_equal(zoned, np.where(inside, 0, plain))
    assert ((plain != 0) & inside).sum() > 20  # latents the dead zone took to zero
    assert (classes[(plain != 0) & inside] < len(latents.DEAD_ZONE)).all()
    np.testing.assert_array_equal(latents.quantize(y, 1.0), plain)  # no classes: plain rounding


def test_hyperprior_files_hold_the_dead_zoned_integers(hyper_model: Path) -> None:
    """The coder's integers are the gain-scaled latents through the dead zone of their exact
    scale classes, and a file decodes to exactly them."""
    import aecompress.latents as latents

    net, _ = passes.model_on(hyper_model, torch.device("cpu"))
    image = ImageData(photo_like(64, 96, seed=8), None, "RGB")
    y = passes.analyse(net, image.rgb, torch.device("cpu"))
    z, q, classes = ScaleClassCoder()._integers(net, y, 40.0)
    scaled = latents.gain_scaled(net, y, 40.0)[:]
    np.testing.assert_array_equal(classes, net.scale_classes(z, tuple(q.shape[1:])))
    np.testing.assert_array_equal(q, latents.quantize(scaled, 1.0, classes))
    data = codec.encode(image, str(hyper_model), 40.0, "cpu").data
    back = ScaleClassCoder().restore_lazily(net, aecformat.unpack(data))
    np.testing.assert_array_equal(back.latents.numpy(), q)
