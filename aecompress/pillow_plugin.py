"""``.aec`` in Pillow: ``Image.open("x.aec")`` and ``im.save("x.aec", quality=60)``.

Registered by ``import aecompress``. Opening reads the header only (size and mode, no torch);
the pixels are decoded on ``load()``, as Pillow does for every format. Saving takes the options
the CLI has: ``quality``, ``target_bpp``, ``model``, ``device``, ``effort``, ``content``, and Pillow's own
``icc_profile`` and ``exif`` (as for PNG or JPEG: given, they replace the image's; empty, they drop
it).
"""

from __future__ import annotations

from typing import IO, Any

from PIL import Image, ImageFile

from aecompress.errors import LimitError

MAX_FILE = 1 << 30  # bytes read from a file object before giving up (a .aec file is far smaller)
SIGNATURE = b"\x89AEC\r\n\x1a\n"  # aecompress.format.SIGNATURE, here so registering imports little


def _accept(prefix: bytes) -> bool:
    return prefix[: len(SIGNATURE)] == SIGNATURE


class AecImageFile(ImageFile.ImageFile):
    format = "AEC"
    format_description = "aecompress learned image codec"

    def _open(self) -> None:
        from aecompress import format as aecformat

        assert self.fp is not None
        data = self.fp.read(MAX_FILE + 1)
        if len(data) > MAX_FILE:
            raise LimitError("file too large for an .aec file")
        # the signature matched, so this is ours: damage raises aecompress's own error here rather
        # than Pillow's "cannot identify image file"
        aec = aecformat.unpack(data)
        self._aec_data: bytes | None = data
        self._size = (aec.header.width, aec.header.height)
        self._mode = aec.header.mode
        if aec.icc:
            self.info["icc_profile"] = aec.icc
        if aec.exif:
            self.info["exif"] = aec.exif
        self.info["aec"] = aecformat.describe(aec)
        self.tile = []

    def load(self) -> Any:
        if self._aec_data is not None:
            from pathlib import Path

            from aecompress import codec

            near = [Path(self.filename).parent] if isinstance(self.filename, str) and self.filename else []
            decoded = codec.decode(self._aec_data, near=near, **self.decoder_options()).to_pil()
            self.im = decoded.im
            self._aec_data = None
        return Image.Image.load(self)

    def decoder_options(self) -> dict[str, Any]:
        """Keyword arguments for decoding: ``im.aec_device`` and ``im.aec_model`` when set."""
        return {"device": getattr(self, "aec_device", "auto"), "model": getattr(self, "aec_model", None)}


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from aecompress.api import compress

    options = im.encoderinfo
    known = {"quality", "target_bpp", "model", "device", "effort", "content"}
    kwargs = {k: options[k] for k in known if k in options and options[k] is not None}
    source = im
    if "icc_profile" in options or "exif" in options:
        source = im.copy()  # the caller's image keeps its own metadata
        if "icc_profile" in options:
            source.info["icc_profile"] = options["icc_profile"] or None
        if "exif" in options:
            exif = options["exif"]
            source.info["exif"] = (exif.tobytes() if isinstance(exif, Image.Exif) else exif) or None
    fp.write(compress(source, **kwargs))


def register() -> None:
    """Make Pillow open and save .aec files."""
    Image.register_open(AecImageFile.format, AecImageFile, _accept)
    Image.register_save(AecImageFile.format, _save)
    Image.register_extension(AecImageFile.format, ".aec")
    Image.register_mime(AecImageFile.format, "image/x-aec")
