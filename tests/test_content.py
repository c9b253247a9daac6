"""Members for the kind of picture: a family's graphics stand-ins, chosen per image by flatness."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from aecompress import api, codec, content, family, placement, residual, synthetic
from aecompress import format as aecformat
from aecompress.cli import app
from aecompress.errors import ModelError
from aecompress.imageio import ImageData
from tests.conftest import make_model, photo_like

runner = CliRunner()


_OWN = [  # a graphics variant's own slices: hi-g takes over at -q 70 from its own -q 35
    {"model": "lo-g", "quality": [0, 70], "local_quality": [0, 90]},
    {"model": "hi-g", "quality": [70, 100], "local_quality": [35, 100]},
]


def _family_file(folder: Path, variants: object) -> Path:
    path = folder / f"duo{family.FAMILY_SUFFIX}"
    members = [
        {"model": "lo", "quality": [0, 40], "local_quality": [20, 60]},
        {"model": "hi", "quality": [40, 100], "local_quality": [10, 100]},
    ]
    path.write_text(
        json.dumps({"kind": family.FAMILY_KIND, "name": "duo", "members": members, "variants": variants})
    )
    return path


@pytest.fixture
def duo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two tiny members and a graphics stand-in for each, behind the family 'duo'."""
    folder = tmp_path / "models"
    folder.mkdir()
    for seed, name in enumerate(("lo", "hi", "lo-g", "hi-g")):
        make_model(folder / f"{name}.pt", name, seed=seed + 3)
    _family_file(folder, [{"kind": "graphics", "flat_share": 0.6, "models": {"lo": "lo-g", "hi": "hi-g"}}])
    monkeypatch.setenv("AECOMPRESS_MODELS", str(folder))
    return folder


def _graphic(height: int = 48, width: int = 64) -> ImageData:
    return ImageData(synthetic.render("slide", 7, width, height), None, "RGB")


def _photo(height: int = 48, width: int = 64) -> ImageData:
    return ImageData(photo_like(height, width, seed=2), None, "RGB")


def test_flat_share_tells_drawn_graphics_from_photos():
    for kind in synthetic.KINDS[:3]:  # screens, slides, comics (a smooth pattern can pass for a photo)
        assert content.flat_share(synthetic.render(kind, 11, 256, 192)) > 0.6
    assert content.flat_share(photo_like(192, 256)) < 0.2
    assert content.flat_share(np.zeros((5, 1, 3), np.uint8)) == 0.0
    stripes = np.zeros((3000, 1000, 3), np.uint8)
    stripes[:, ::4] = 255  # 250 white columns: 249 differ from the left, 250 from the right
    assert content.flat_share(stripes) == pytest.approx((999 - 249 - 250) / 999, abs=1e-9)  # rows sampled


def test_auto_codes_each_image_with_the_members_of_its_kind_at_the_same_quality(duo: Path):
    graphic, photo = _graphic(), _photo()
    for quality, base in ((30, "lo"), (80, "hi")):
        drawn = codec.encode(graphic, "duo", quality, "cpu")
        plain = codec.encode(photo, "duo", quality, "cpu")
        assert (drawn.header.model_name, plain.header.model_name) == (base + "-g", base)
        assert drawn.header.step == pytest.approx(plain.header.step)  # the member's own -q slice
        forced = codec.encode(graphic, "duo", quality, "cpu", content="photo")
        assert forced.header.model_name == base
        assert codec.encode(photo, "duo", quality, "cpu", content="graphics").header.model_name == base + "-g"
        for result in (drawn, plain):
            assert codec.decode(result.data, "cpu").width == 64
            assert codec.decode(result.data, "cpu", "duo").width == 64  # a family names its stand-ins
    sized = codec.encode(graphic, "duo", device="cpu", target_bpp=2.0)
    assert aecformat.unpack(sized.data).header.model_name in ("lo-g", "hi-g")


def test_a_batch_tells_each_image_apart_and_makes_the_files_of_one_at_a_time(duo: Path):
    images = [_graphic(), _photo(), _graphic(48, 64), _photo(32, 40)]
    many = codec.encode_many(images, "duo", 50, "cpu")
    assert [r.header.model_name for r in many] == ["hi-g", "hi", "hi-g", "hi"]
    assert [r.data for r in many] == [codec.encode(image, "duo", 50, "cpu").data for image in images]
    forced = api.compress_many(
        [_graphic().rgb, _photo().rgb], quality=50, model="duo", device="cpu", content="photo"
    )
    assert [aecformat.unpack(d).header.model_name for d in forced] == ["hi", "hi"]


def test_a_kind_nobody_serves_is_an_error_and_a_single_model_serves_photos(duo: Path):
    with pytest.raises(ModelError, match="graphics"):
        codec.encode(_photo(), "duo", 50, "cpu", content="drawing")
    with pytest.raises(ModelError, match="single model"):
        codec.encode(_graphic(), duo / "lo.pt", 50, "cpu", content="graphics")
    for kind in ("auto", "photo"):
        assert codec.encode(_graphic(), duo / "lo.pt", 50, "cpu", content=kind).header.model_name == "lo"


@pytest.mark.parametrize(
    "variants",
    [
        [{"kind": "graphics", "flat_share": 0.0, "models": {"lo": "lo-g"}}],
        [{"kind": "graphics", "flat_share": 1.5, "models": {"lo": "lo-g"}}],
        [{"kind": "graphics", "flat_share": 0.6, "models": {"mid": "lo-g"}}],
        [{"kind": "graphics", "flat_share": 0.6, "models": {}}],
        [{"kind": "photo", "flat_share": 0.6, "models": {"lo": "lo-g"}}],
        [
            {"kind": "g", "flat_share": 0.6, "models": {"lo": "a"}},
            {"kind": "g", "flat_share": 0.7, "models": {"hi": "b"}},
        ],
        [{"kind": "graphics", "models": {"lo": "lo-g"}}],
        {"graphics": 0.6},
        [{"kind": "graphics", "flat_share": 0.6, "models": {"lo": "lo-g"}, "members": _OWN[:1]}],  # gap
        [
            {"kind": "graphics", "flat_share": 0.6, "models": {"lo": "lo-g"}, "members": _OWN}
        ],  # not a stand-in
        [{"kind": "graphics", "flat_share": 0.6, "models": {"lo": "lo-g"}, "members": []}],
    ],
)
def test_bad_variants_are_refused(tmp_path: Path, variants: object):
    with pytest.raises(ModelError):
        family.load_family(_family_file(tmp_path, variants))


def test_a_family_with_variants_survives_saving(duo: Path, tmp_path: Path):
    fam = family.load_family(duo / f"duo{family.FAMILY_SUFFIX}")
    assert fam.kinds() == ["photo", "graphics"]
    assert [m.model for m in fam.for_kind("graphics").members] == ["lo-g", "hi-g"]
    assert fam.for_kind("graphics").members[1].local_quality == fam.members[1].local_quality
    family.save(fam, tmp_path / f"again{family.FAMILY_SUFFIX}")
    assert family.load_family(tmp_path / f"again{family.FAMILY_SUFFIX}").variants == fam.variants


def test_cli_takes_content_and_lists_the_variant(duo: Path, tmp_path: Path):
    src = tmp_path / "slide.png"
    Image.fromarray(_graphic().rgb).save(src)
    out = tmp_path / "slide.aec"
    for kind, model in (("auto", "hi-g"), ("photo", "hi")):
        result = runner.invoke(
            app, ["encode", str(src), "-m", "duo", "--content", kind, "-o", str(out), "-f"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(runner.invoke(app, ["info", "--json", str(out)]).stdout)[0]["model"] == model
    bad = runner.invoke(app, ["encode", str(src), "-m", "duo", "--content", "drawing", "-o", str(out), "-f"])
    assert bad.exit_code != 0 and "--content drawing" in bad.output
    listing = runner.invoke(app, ["models"])
    assert "graphics" in listing.stdout and "lo-g for lo, hi-g for hi" in listing.stdout


def test_batch_codes_a_folder_of_both_kinds_each_with_its_members(duo: Path, tmp_path: Path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(_graphic().rgb).save(src / "slide.png")
    Image.fromarray(_photo().rgb).save(src / "photo.png")
    for kind, expected in (
        ("auto", {"slide": "lo-g", "photo": "lo"}),
        ("graphics", {"slide": "lo-g", "photo": "lo-g"}),
    ):
        result = runner.invoke(app, ["batch", str(src), str(dst), "-m", "duo", "-q", "20", "-j", "1",
                                     "--content", kind, "--force"])  # fmt: skip
        assert result.exit_code == 0, result.output
        names = {
            p.name.split(".")[0]: aecformat.unpack(p.read_bytes()).header.model_name
            for p in dst.glob("*.aec")
        }
        assert names == expected


def test_bench_measures_the_files_of_the_kind_it_is_told(duo: Path, tmp_path: Path):
    from aecompress import bench

    Image.fromarray(_photo().rgb).save(tmp_path / "photo.png")
    for kind in ("auto", "graphics"):
        point = bench.run(tmp_path, ["aec"], "duo", "cpu", {"aec": [50]}, content=kind).points["aec"][0]
        size = len(codec.encode(_photo(), "duo", 50, "cpu", content=kind).data)
        assert point.bpp == pytest.approx(8 * size / (48 * 64))


def test_a_variant_with_slices_of_its_own_codes_graphics_there(duo: Path):
    path = duo / f"duo{family.FAMILY_SUFFIX}"
    _family_file(duo, [{"kind": "graphics", "flat_share": 0.6, "models": {"lo": "lo-g", "hi": "hi-g"},
                        "members": _OWN}])  # fmt: skip
    fam = family.load_family(path)
    assert fam.for_kind("graphics").members == fam.variants[0].members
    assert fam.member_named("hi-g") == fam.variants[0].members[1]  # decoding finds the stand-in's own
    family.save(fam, path)
    assert family.load_family(path).variants == fam.variants
    graphic, photo = _graphic(), _photo()
    for quality, drawn_by, photo_by in ((50, "lo-g", "hi"), (85, "hi-g", "hi")):
        drawn = codec.encode(graphic, "duo", quality, "cpu")
        assert (drawn.header.model_name, codec.encode(photo, "duo", quality, "cpu").header.model_name) == (
            drawn_by,
            photo_by,
        )
        assert codec.decode(drawn.data, "cpu", "duo").width == 64
    alone = codec.encode(graphic, duo / "lo-g.pt", 90 * 50 / 70, "cpu")  # lo-g's own -q at global 50
    in_family = codec.encode(graphic, "duo", 50, "cpu")
    assert in_family.header.step == pytest.approx(alone.header.step)
    assert len(in_family.data) == len(alone.data)
    assert np.array_equal(codec.decode(in_family.data, "cpu").rgb, codec.decode(alone.data, "cpu").rgb)
    listing = runner.invoke(app, ["models"])
    assert "lo-g for -q 0-70, hi-g for -q 70-100" in listing.stdout


def test_a_drawn_image_in_a_tail_aims_at_its_own_file_at_the_end(duo: Path):
    """A graphics variant's residual tail: the step of a drawn image is searched towards the size
    of its file at the tail's end measured on that file's own base (``Span.last``); a photo's
    towards the end measured on the base at hand, as before."""
    own = [
        {"model": "lo-g", "quality": [0, 50], "local_quality": [0, 90]},
        {"model": "hi-g", "quality": [50, 100], "local_quality": [35, 100], "residual": [64, 4]},
    ]
    models = {"lo": "lo-g", "hi": "hi-g"}
    path = _family_file(duo, [{"kind": "graphics", "flat_share": 0.6, "models": models, "members": own}])
    data = json.loads(path.read_text())
    data["members"][1]["residual"] = [64, 4]  # the photo members' tail too
    path.write_text(json.dumps(data))
    graphic = _graphic(64, 96)
    placer = placement.Placer("duo", graphic, torch.device("cpu"))
    assert placer.residual(50) == residual.Span(64.0, 4.0, 0.0, residual.TAIL_GROWTH**50)  # at an end: none
    span = placer.residual(75)
    assert span is not None and span.t == 0.5 and span.last is not None
    files = {q: codec.encode(graphic, "duo", q, "cpu").data for q in (50, 60, 70, 75, 80, 90, 100)}
    assert span.last == pytest.approx(math.log(len(files[100])), abs=0.03)  # sized as the search sizes
    assert span.cap == len(files[100])  # made as the file at -q 100 is
    sizes = [len(data) for data in files.values()]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    photo = placement.Placer("duo", _photo(64, 96), torch.device("cpu"))
    plain = residual.Span(64.0, 4.0, 35 / 60, residual.TAIL_GROWTH**60)  # no end of its own
    assert photo.kind == family.PHOTO and photo.residual(75) == plain
