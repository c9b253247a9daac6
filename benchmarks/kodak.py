"""Kodak rate-distortion and speed of the bundled codec, beside Pillow JPEG at equal file size.

    python benchmarks/kodak.py [--data ../shared/data/kodak] [-q 50 60 70 75 80 90] [--threads 2]

For each -q: mean bpp (whole .aec files), PSNR and MS-SSIM over the images; JPEG (4:2:0,
optimize=True) PSNR/MS-SSIM at each image's exact aecompress rate (interpolated over JPEG
qualities 5..95); on how many images aecompress wins; encode/decode seconds per image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from aecompress import codec
from aecompress.evaluate import at_rate, load_folder, mean, measure_aec, pillow_curve

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    parser.add_argument("-q", "--qualities", type=int, nargs="+", default=[50, 60, 70, 75, 80, 90])
    parser.add_argument("--model", default=None, help="model name or file (default: the bundled default)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_out", default=None, help="also write the rows as JSON here")
    parser.add_argument("--card", default=None, help="update this model card's 'kodak' figures (JSON)")
    parser.add_argument(
        "--target-bpp", type=float, nargs="*", default=[], help="also report how often --target-bpp hits"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = load_folder(Path(args.data))
    if not images:
        print(f"no images in {args.data}", file=sys.stderr)
        return 1
    measure_aec(*images[0], args.qualities[0], args.model)  # warm-up: model load, allocator
    curves = {name: pillow_curve(name, img) for name, img in images}
    rows = []
    for q in args.qualities:
        ms = [measure_aec(name, img, q, args.model) for name, img in images]
        jpeg = [at_rate(curves[m.image], m.bpp) for m in ms]
        rows.append({
            "quality": q,
            "bpp": mean([m.bpp for m in ms]),
            "psnr": mean([m.psnr for m in ms]),
            "ms_ssim": mean([m.ms_ssim for m in ms]),
            "jpeg_psnr": mean([j[0] for j in jpeg]),
            "jpeg_ms_ssim": mean([j[1] for j in jpeg]),
            "wins": int(sum(m.psnr > j[0] for m, j in zip(ms, jpeg, strict=True))),
            "images": len(ms),
            "encode_s": mean([m.encode_s for m in ms]),
            "decode_s": mean([m.decode_s for m in ms]),
        })  # fmt: skip
    print(f"Kodak ({len(images)} images), model {args.model or 'default'}, {args.threads} threads")
    print(
        "|  -q |   bpp | PSNR dB | MS-SSIM | JPEG PSNR @ same size | JPEG MS-SSIM "
        "| ΔPSNR | wins | enc s | dec s |"
    )
    print(
        "|----:|------:|--------:|--------:|---------------------:|-------------:|------:|-----:|------:|------:|"
    )
    for r in rows:
        print(
            f"| {r['quality']:3d} | {r['bpp']:.3f} | {r['psnr']:7.2f} | {r['ms_ssim']:.4f} | "
            f"{r['jpeg_psnr']:20.2f} | {r['jpeg_ms_ssim']:12.4f} | {r['psnr'] - r['jpeg_psnr']:+.2f} | "
            f"{r['wins']:2d}/{r['images']} | {r['encode_s']:.2f} | {r['decode_s']:.2f} |"
        )
    for target in args.target_bpp:
        rates = [
            8
            * len(codec.encode(img, args.model, device="cpu", target_bpp=target).data)
            / (img.width * img.height)
            for _, img in images
        ]
        hits = sum(target * 0.95 <= r <= target for r in rates)
        print(f"--target-bpp {target}: {hits}/{len(rates)} images within 5% under the target, "
              f"mean {mean(rates):.3f} bpp, range {min(rates):.3f}-{max(rates):.3f}")  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    if args.card:
        _update_card(Path(args.card), rows, " ".join(sys.argv))
    return 0


def _update_card(path: Path, rows: list[dict[str, float]], command: str) -> None:
    """Record the measured curve in a model card, the default quality's point as its summary.

    A family file (NAME.family.json) keeps its card inside; a model's card is the JSON beside it.
    """
    data = json.loads(path.read_text()) if path.is_file() else {}
    card = data["card"] if path.name.endswith(".family.json") else data
    default = min(rows, key=lambda r: abs(r["quality"] - 75))
    card["kodak"] = {
        "quality": default["quality"],
        "bpp": round(default["bpp"], 4),
        "psnr": round(default["psnr"], 3),
        "ms_ssim": round(default["ms_ssim"], 5),
        "jpeg_psnr_at_same_size": round(default["jpeg_psnr"], 3),
        "curve": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
        "command": command,
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
