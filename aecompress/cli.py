"""The command line: only the Typer layer. The work is done by the library modules it calls.

torch is imported inside the commands that need it, so ``--help`` and ``info`` stay fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aecompress import __version__
from aecompress import precision as precision_lib
from aecompress.defaults import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY
from aecompress.errors import AecError, ImageError, OutputError

if TYPE_CHECKING:
    from aecompress.family import Member

app = typer.Typer(
    name="aecompress",
    help="A learned image codec: compress images into .aec files and restore them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state: dict[str, Any] = {"verbose": False, "quiet": False, "debug": False}
log = logging.getLogger("aecompress")


def _say(message: str) -> None:
    if not _state["quiet"]:
        typer.echo(message, err=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aecompress {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Say more (device used, model, timings).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    precision: Annotated[
        str,
        typer.Option(
            "--precision",
            help="Network precision: auto (bfloat16 on CPUs where it runs faster, else float32), bf16 "
            "or fp32. Files parse identically whatever it is; pixels may differ in the last bit.",
        ),
    ] = "auto",
) -> None:
    """A learned image codec: compress images into .aec files and restore them."""
    if precision not in precision_lib.PRECISIONS:
        raise typer.BadParameter(f"{precision!r} is not one of auto, bf16, fp32", param_hint="--precision")
    precision_lib.set(precision)
    _state.update(verbose=verbose and not quiet, quiet=quiet, debug=debug)
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="aecompress: %(message)s", stream=sys.stderr)
    log.setLevel(logging.ERROR if quiet else level)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn our own errors into one line on stderr and exit 1 (tracebacks only with --debug)."""

    def show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        _say(f"aecompress: warning: {message}")

    old = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        yield
    except AecError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"aecompress: error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("aecompress: interrupted", err=True)
        raise typer.Exit(130) from None
    finally:
        warnings.showwarning = old


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if path.is_dir():
        raise ImageError(f"{name}: is a folder (use 'aecompress batch' for folders)")
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"{name}: no such file") from exc
    except OSError as exc:
        raise ImageError(f"{name}: cannot read ({exc.strerror})") from exc


def _write_output(target: str, data: bytes, force: bool) -> None:
    from aecompress.fileio import atomic_write

    if target == "-":
        if sys.stdout.isatty():
            raise OutputError("refusing to write binary data to a terminal (use -o FILE)")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        atomic_write(Path(target), data, force)


def _targets(inputs: list[str], output: str | None, default: Callable[[str], str]) -> list[str]:
    """Where each input goes: -o names a file for one input and a folder for several."""
    if output is None:
        return ["-" if name == "-" else default(name) for name in inputs]
    if len(inputs) == 1 and not Path(output).is_dir():
        return [output]
    folder = Path(output)
    if not folder.is_dir():
        raise OutputError(f"-o {output}: with several inputs, -o must be an existing folder")
    return [str(folder / Path(default(name)).name) for name in inputs]


def _fail(errors: int) -> None:
    if errors:
        raise typer.Exit(1)


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model or family name (see 'aecompress models'), or a model file."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="CPU threads for the networks (default: all cores)."),
]


def _use_threads(threads: int | None) -> None:
    """Give torch the threads asked for (it imports torch: call it only where a network runs)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


ForceOpt = Annotated[bool, typer.Option("-f", "--force", help="Overwrite existing outputs.")]
MaxPixelsOpt = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse images larger than this many pixels (decompression bombs).",
    ),
]


EffortOpt = Annotated[
    int,
    typer.Option(
        "-e",
        "--effort",
        min=0,
        max=1000,
        help="Refine the latents with this many decoder passes (each costs about two decodes): 0 "
        "(default) is fastest; 20 gains up to a few tenths of a dB at high qualities, little at low ones. "
        "Serves factorized and hyperprior codecs (the default among them), not context models.",
    ),
]


ContentOpt = Annotated[
    str,
    typer.Option(
        "--content",
        help="The kind of picture whose members of a family code each image: auto (default) tells "
        "from the pixels; photo, or another kind the family has ('aecompress models' lists them), "
        "chooses for every image.",
    ),
]


@app.command()
def encode(
    images: Annotated[list[str], typer.Argument(help="Images to compress ('-' reads stdin).")],
    output: Annotated[
        str | None,
        typer.Option("-o", "--output", help="Output file (one input) or folder; '-' is stdout."),
    ] = None,
    quality: Annotated[
        float,
        typer.Option(
            "-q", "--quality", min=0, max=100, help="Quality 0-100 (fractions allowed), higher is better."
        ),
    ] = DEFAULT_QUALITY,
    target_bpp: Annotated[
        float | None,
        typer.Option(
            "--target-bpp",
            min=0.0,
            help="Pick per image the highest quality at or under this many bits per pixel.",
        ),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    effort: EffortOpt = 0,
    threads: ThreadsOpt = None,
    content: ContentOpt = "auto",
) -> None:
    """Compress images into .aec files (default: IMAGE.aec beside each input, which is kept)."""
    with _user_errors():
        from aecompress.fileio import check_writable

        targets = _targets(images, output, lambda n: n + ".aec")
        for target in targets:
            if target != "-":
                check_writable(Path(target), force)
        from aecompress import codec
        from aecompress.device import describe_precision
        from aecompress.imageio import read_image

        _use_threads(threads)
        errors = 0
        for name, target in zip(images, targets, strict=True):
            try:
                image = read_image(_read_input(name) if name == "-" else Path(name), max_pixels)
                result = codec.encode(
                    image, model, quality, device, effort=effort, target_bpp=target_bpp, content=content
                )
                _write_output(target, result.data, force)
            except AecError as exc:
                if len(images) == 1:
                    raise
                typer.echo(f"aecompress: error: {exc}", err=True)
                errors += 1
                continue
            bpp = 8 * len(result.data) / (image.width * image.height)
            detail = (
                f" [-q {result.header.quality}, {result.header.model_name} on {result.device}, "
                f"{describe_precision(result.device)}]"
                if _state["verbose"]
                else ""
            )
            _say(
                f"{name} -> {target}: {image.width}x{image.height} {image.mode}, "
                f"{len(result.data)} bytes, {bpp:.3f} bpp{detail}"
            )
        _fail(errors)


@app.command()
def decode(
    files: Annotated[list[str], typer.Argument(help=".aec files to restore ('-' reads stdin).")],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            help="Output image (format from its extension) or folder; '-' is stdout (PNG).",
        ),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    threads: ThreadsOpt = None,
) -> None:
    """Restore images from .aec files (default: strip .aec, so a.png.aec -> a.png)."""
    with _user_errors():
        from aecompress.fileio import check_writable
        from aecompress.imageio import decoded_name, output_format

        targets = _targets(files, output, decoded_name)
        for target in targets:
            if target != "-":
                output_format(target)
                check_writable(Path(target), force)
        from aecompress import codec
        from aecompress.device import describe_precision, select_device
        from aecompress.imageio import encode_image_bytes

        _use_threads(threads)
        errors = 0
        for name, target in zip(files, targets, strict=True):
            try:
                near = [] if name == "-" else [Path(name).parent]
                image = codec.decode(_read_input(name), device, model, max_pixels=max_pixels, near=near)
                fmt = "PNG" if target == "-" else output_format(target)
                _write_output(target, encode_image_bytes(image, fmt), force)
            except AecError as exc:
                if len(files) == 1:
                    raise
                typer.echo(f"aecompress: error: {name}: {exc}", err=True)
                errors += 1
                continue
            dev = select_device(device)
            detail = f" [on {dev}, {describe_precision(dev)}]" if _state["verbose"] else ""
            _say(f"{name} -> {target}: {image.width}x{image.height} {image.mode}{detail}")
        _fail(errors)


@app.command()
def batch(
    src: Annotated[Path, typer.Argument(help="Folder of images (searched recursively).")],
    dst: Annotated[Path, typer.Argument(help="Output folder; the tree of SRC is mirrored in it.")],
    decode: Annotated[
        bool, typer.Option("--decode", "-d", help="Restore: SRC holds .aec files, DST gets images.")
    ] = False,
    quality: Annotated[
        float, typer.Option("-q", "--quality", min=0, max=100, help="Quality 0-100, as for encode.")
    ] = DEFAULT_QUALITY,
    target_bpp: Annotated[
        float | None, typer.Option("--target-bpp", min=0.0, help="Per image, as for encode.")
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    jobs: Annotated[
        int | None,
        typer.Option("-j", "--jobs", min=1, help="Parallel workers (default: one per core; 1 on a GPU)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("-f", "--force", help="Redo files whose output is up to date.")
    ] = False,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Write one JSON line per file to this file.")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Decode each new .aec file and record its PSNR.")
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard", help="K/N: do only this machine's share (K from 0), e.g. $SLURM_ARRAY_TASK_ID/8."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors.")] = False,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    effort: EffortOpt = 0,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="CPU threads in all, shared by the workers (default: all)."),
    ] = None,
    content: ContentOpt = "auto",
) -> None:
    """Compress (or with --decode restore) a whole folder tree, in parallel and incrementally.

    SRC/a/b.png becomes DST/a/b.png.aec. Outputs newer than their inputs are skipped, so a re-run
    after an interruption resumes. Exit status: 0 all done, 2 some files failed, 1 none could be done.
    """
    if quiet:
        _state.update(quiet=True, verbose=False)
    with _user_errors():
        from aecompress import batch as batch_lib

        if verify and decode:
            raise AecError("--verify compares new .aec files with their images: it applies to encoding")
        parts = batch_lib.parse_shard(shard) if shard else None
        plan = batch_lib.scan(src, dst, decode, force, parts)
        workers = jobs or batch_lib.default_workers(device)
        workers = max(1, min(workers, len(plan.todo)))
        threads = max(1, (threads or batch_lib.cpu_count()) // workers)
        options = batch_lib.Options(
            decode,
            quality,
            target_bpp,
            model,
            device,
            verify,
            threads,
            max_pixels,
            effort=effort,
            precision=precision_lib.current(),
            content=content,
        )
        if not plan.todo and not plan.up_to_date and not _state["quiet"]:
            _say(f"aecompress: no {'.aec files' if decode else 'images'} found under {src}")
        log.info("batch: %d to do, %d up to date, %d workers x %d threads",
                 len(plan.todo), len(plan.up_to_date), workers, threads)  # fmt: skip
        stop = {"requested": 0}

        def request_stop(signum: int, frame: object) -> None:
            stop["requested"] += 1
            if stop["requested"] > 1:
                raise KeyboardInterrupt
            _say("aecompress: stopping after the files in progress (Ctrl-C again to abort)")

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with _batch_display(plan) as show, _manifest_writer(manifest) as write:

                def on_outcome(outcome: batch_lib.Outcome) -> None:
                    write(outcome.record())
                    show(outcome)

                summary = batch_lib.run(plan, options, workers, on_outcome, lambda: stop["requested"] > 0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not _state["quiet"]:
            typer.echo(summary.table())
        elif summary.failures:
            for failure in summary.failures:
                typer.echo(f"aecompress: FAILED {failure.rel}: {failure.reason}", err=True)
        if summary.interrupted:
            raise typer.Exit(130)
        raise typer.Exit(summary.exit_code())


@contextmanager
def _manifest_writer(path: Path | None) -> Iterator[Callable[[dict[str, Any]], None]]:
    if path is None:
        yield lambda record: None
        return
    try:
        handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise OutputError(f"cannot write manifest {path}: {exc.strerror}") from exc
    with handle:

        def write(record: dict[str, Any]) -> None:
            handle.write(json.dumps(record) + "\n")
            handle.flush()

        yield write


@contextmanager
def _batch_display(plan: Any) -> Iterator[Callable[[Any], None]]:
    """A rich progress bar (files, MB, files/s, time left) on a terminal; one line per file otherwise."""
    if _state["quiet"] or not sys.stderr.isatty():

        def line(outcome: Any) -> None:
            if outcome.status == "failed":
                typer.echo(f"aecompress: FAILED {outcome.rel}: {outcome.reason}", err=True)
            elif outcome.status == "done" or _state["verbose"]:
                bpp = f", {outcome.bpp:.3f} bpp" if outcome.bpp is not None else ""
                psnr = f", {outcome.psnr:.2f} dB" if outcome.psnr is not None else ""
                why = f" ({outcome.reason})" if outcome.reason else ""
                sizes = f"{outcome.bytes_in} -> {outcome.bytes_out} bytes"
                _say(f"{outcome.status} {outcome.rel}: {sizes}{bpp}{psnr}{why}")

        yield line
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    total_mb = plan.todo_bytes / 1e6
    progress = Progress(
        TextColumn("{task.completed}/{task.total} files"), BarColumn(),
        TextColumn("{task.fields[mb]:.1f}/" + f"{total_mb:.1f} MB"), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
    )  # fmt: skip
    task = progress.add_task("batch", total=len(plan.todo), mb=0.0, rate="")
    start = time.perf_counter()
    state = {"files": 0, "bytes": 0}

    def update(outcome: Any) -> None:
        if outcome.status == "failed":
            progress.console.print(f"FAILED {outcome.rel}: {outcome.reason}", markup=False)
        if outcome.status not in ("done", "failed"):
            return
        state["files"] += 1
        state["bytes"] += outcome.bytes_in
        rate = state["files"] / max(time.perf_counter() - start, 1e-9)
        progress.update(task, completed=state["files"], mb=state["bytes"] / 1e6, rate=f"{rate:.1f} files/s")

    with progress:
        yield update


@app.command()
def info(
    files: Annotated[list[str], typer.Argument(help=".aec files to describe ('-' reads stdin).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (one object per file, in a list).")
    ] = False,
) -> None:
    """Show .aec header fields (size, mode, model, quality, latents, bytes, bpp) without decoding."""
    with _user_errors():
        from aecompress.format import describe, unpack

        records = []
        for name in files:
            record = {"file": name, **describe(unpack(_read_input(name)))}
            records.append(record)
        if as_json:
            typer.echo(json.dumps(records, indent=2))
            return
        for record in records:
            typer.echo(f"{record['file']}:")
            width = max(len(key) for key in record)
            for key, value in record.items():
                if key != "file":
                    typer.echo(f"  {key:{width}} {value}")


@app.command()
def train(
    data: Annotated[
        list[str] | None,
        typer.Argument(help="Folders (or files) of training images, searched recursively."),
    ] = None,
    output: Annotated[
        str, typer.Option("-o", "--output", help="Model file to write (e.g. mycodec.pt).")
    ] = "",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 20_000,
    lmbda: Annotated[
        float,
        typer.Option(
            "--lambda", help="Rate-distortion trade-off: higher means better quality, bigger files."
        ),
    ] = 0.01,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Crops per step (per process).")] = 8,
    crop: Annotated[
        int | None,
        typer.Option("--crop", min=8, help="Training crop size in pixels (default: the architecture's)."),
    ] = None,
    lr: Annotated[
        float, typer.Option("--lr", help="Peak learning rate (warm-up, plateau, decays at 78% and 93%).")
    ] = 5e-4,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Architecture: factorized, hyperprior (variable rate, with side information), context "
            "(a hyperprior with means and channel-slice context) or "
            "tutorial. Default: the --init model's (fine-tuning keeps it), else factorized.",
        ),
    ] = None,
    channels: Annotated[
        int, typer.Option("--channels", help="Hidden channels of the factorized architecture.")
    ] = 128,
    act: Annotated[
        str, typer.Option("--act", help="Nonlinearity of the factorized architecture: gdn or leakyrelu.")
    ] = "gdn",
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride",
            help="Pixels per latent of the factorized architecture: 16 (default) or 8, 4, 2 for high "
            "qualities. With --init, re-strides the starting model.",
        ),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            help="Start from this model (name or file): fine-tuning. A family starts from the member "
            "that codes its default -q (--init default: the default codec's 'hyperprior-hs16').",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUTPUT.ckpt exactly where it stopped.")
    ] = False,
    val: Annotated[
        list[str] | None,
        typer.Option("--val", help="Validation images (default: a few held out from DATA)."),
    ] = None,
    val_every: Annotated[
        int, typer.Option("--val-every", min=1, help="Steps between validation passes.")
    ] = 1000,
    dataset: Annotated[
        str, typer.Option("--dataset", help="folder (default) or stl10 (torchvision's layout).")
    ] = "folder",
    data_root: Annotated[
        str | None,
        typer.Option("--data-root", help="Folder holding stl10_binary/ (with --dataset stl10)."),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option("--time-budget", help="Stop after this many seconds (the schedule follows)."),
    ] = None,
    device: DeviceOpt = "auto",
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=0, help="Data loader processes (default: 0 on CPU, 4 on GPU)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for torch.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision",
            help="fp32 (default) or bf16: the networks under bfloat16 autocast, about twice as fast "
            "on CPUs with native bfloat16 and on GPUs; the rate terms stay float32. Can change at "
            "--resume.",
        ),
    ] = None,
    lr_scale: Annotated[
        list[str] | None,
        typer.Option(
            "--lr-scale",
            help="PREFIX=FACTOR: parameters whose names start with PREFIX learn at FACTOR times --lr "
            "(e.g. h_a=5 h_s=5 for the new hyperprior parts of a warm start). Repeatable.",
        ),
    ] = None,
    freeze: Annotated[
        list[str] | None,
        typer.Option(
            "--freeze",
            help="PREFIX: parameters whose names start with PREFIX do not train (e.g. g_a g_s log_gain "
            "log_igain: fit a hyperprior's new parts to inherited transforms first). Repeatable.",
        ),
    ] = None,
    lambdas: Annotated[
        str | None,
        typer.Option(
            "--lambdas",
            help="Variable-rate models (hyperprior): the trained lambdas, increasing and comma-separated "
            "(default 0.0018,0.0048,0.013,0.035,0.093,0.25).",
        ),
    ] = None,
    rate_range: Annotated[
        str | None,
        typer.Option(
            "--rate-range",
            help="Variable-rate models: LO,HI, the rate positions (0 = first lambda, 1 = second, ...) "
            "that -q 0 and -q 100 map to; they may reach past the trained ends (default -1.5,5.5).",
        ),
    ] = None,
    synthesis_channels: Annotated[
        int | None,
        typer.Option(
            "--synthesis-channels",
            min=1,
            help="Variable-rate models: the width of h_s, the network every parse runs (default: h_a's, "
            "64). Narrower parses faster; with --init, h_s starts afresh and the rest is taken.",
        ),
    ] = None,
    train_rates: Annotated[
        str | None,
        typer.Option(
            "--train-rates",
            help="Variable-rate models: LO,HI, the rate positions (0 = first lambda) a step samples from; "
            "default all of them. A member a family uses only at its top can spend its steps there. "
            "Can change at --resume.",
        ),
    ] = None,
    compile_step: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Run the training step through torch.compile: about 1.3-1.5x the steps per hour on a "
            "CPU after a minute or two of compiling (a C++ compiler is needed there). Can change at "
            "--resume.",
        ),
    ] = False,
    ema: Annotated[
        float,
        typer.Option(
            "--ema",
            min=0.0,
            max=0.9999,
            help="Validate and write the moving average of the weights with this decay (e.g. 0.999): "
            "steadier than the last step's weights. 0 (default) is off; can be switched on at --resume.",
        ),
    ] = 0.0,
    ms_ssim_weight: Annotated[
        float | None,
        typer.Option(
            "--ms-ssim-weight",
            min=0.0,
            max=1.0,
            help="Share of MS-SSIM in the distortion, 0 (MSE alone, default) to 1: a blend keeps fine "
            "texture that MSE alone blurs. Can change at --resume.",
        ),
    ] = None,
    synthetic: Annotated[
        float,
        typer.Option(
            "--synthetic",
            min=0.0,
            max=0.9,
            help="Share of the crops drawn from generated screens, slides, comics and patterns (flat "
            "colours, hard edges, text: what photos lack), 0 (default) to 0.9. Fixed for a run.",
        ),
    ] = 0.0,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", min=1, help="Steps between checkpoints.")
    ] = 1000,
    log_every: Annotated[int, typer.Option("--log-every", min=1, help="Steps between log lines.")] = 100,
    name: Annotated[
        str | None, typer.Option("--name", help="Model name stored in the file (default: file stem).")
    ] = None,
) -> None:
    """Train a codec on a folder of images; resumable; writes a model that 'encode --model' takes.

    Under torchrun (torchrun --nproc_per_node N -m aecompress train ...) it runs DistributedDataParallel.
    """
    with _user_errors():
        import torch

        from aecompress.placement import pick_model
        from aecompress.train import make_config
        from aecompress.train import train as run_training

        if threads:
            torch.set_num_threads(threads)
        # a family (--init default) starts from the member that codes its default -q
        init_path = pick_model(init, DEFAULT_QUALITY)[0] if init and not resume else None
        cfg = make_config(
            data=data, output=output, dataset=dataset, data_root=data_root, arch=arch, init=init_path,
            channels=channels, act=act, stride=stride,
            lambdas=_floats(lambdas, "--lambdas") if lambdas is not None else None,
            rate_range=_floats(rate_range, "--rate-range") if rate_range is not None else None,
            synthesis_channels=synthesis_channels,
            steps=steps, batch_size=batch_size, crop=crop, lr=lr, lmbda=lmbda, seed=seed, device=device,
            workers=workers, checkpoint_every=checkpoint_every, log_every=log_every, val=val,
            val_every=val_every, time_budget=time_budget, name=name, precision=precision,
            lr_scales=_lr_scales(lr_scale or []), ema=ema, frozen=list(freeze or []),
            ms_ssim_weight=ms_ssim_weight, synthetic=synthetic,
            train_rates=_pair(train_rates, "--train-rates") if train_rates is not None else None,
            compile=compile_step,
            command="aecompress train " + " ".join(sys.argv[2:]),
        )  # fmt: skip
        stop_requested = False

        def request_stop(signum: int, frame: object) -> None:
            nonlocal stop_requested
            stop_requested = True
            _say("aecompress: stopping after this step (checkpoint and model will be written)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, request_stop)
        with _training_display(steps) as hooks:
            hooks.stop = lambda step: stop_requested
            path = run_training(cfg, resume=resume, hooks=hooks)
        _say(f"wrote {path} (checkpoint {path}.ckpt, log {path}.log.jsonl)")


def _floats(text: str, option: str) -> list[float]:
    from aecompress.errors import TrainingError

    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise TrainingError(f"{option} {text!r}: expected numbers separated by commas") from None


def _pair(text: str, option: str) -> tuple[float, float]:
    from aecompress.errors import TrainingError

    values = _floats(text, option)
    if len(values) != 2:
        raise TrainingError(f"{option} {text!r}: expected two numbers, LO,HI")
    return values[0], values[1]


def _lr_scales(items: list[str]) -> dict[str, float]:
    from aecompress.errors import TrainingError

    scales = {}
    for item in items:
        prefix, _, factor = item.partition("=")
        try:
            scales[prefix] = float(factor)
        except ValueError:
            raise TrainingError(f"--lr-scale {item!r}: expected PREFIX=FACTOR, e.g. h_s=5") from None
        if not prefix or scales[prefix] <= 0:
            raise TrainingError(f"--lr-scale {item!r}: expected PREFIX=FACTOR with FACTOR > 0")
    return scales


@contextmanager
def _training_display(total: int) -> Iterator[Any]:
    """A live rich progress bar on a terminal; plain log lines otherwise (or with -v)."""
    from aecompress.train import TrainHooks

    hooks = TrainHooks()
    latest: dict[str, Any] = {}

    def line(record: dict[str, Any]) -> None:
        latest.update(record)
        if "val_bpp" in record:
            _say(f"validation at step {record['step']}: {record['val_bpp']:.4f} bpp (real files), "
                 f"{record['val_psnr']:.2f} dB")  # fmt: skip
        else:
            _say(f"step {record['step']}: loss {record['loss']:.4f}, {record['bpp']:.4f} bpp, "
                 f"{record['psnr']:.2f} dB, lr {record['lr']:.2e}, {record['elapsed']:.0f} s")  # fmt: skip

    if _state["quiet"] or not sys.stderr.isatty():
        hooks.on_log = hooks.on_val = line
        yield hooks
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("step {task.completed}/{task.total}"), BarColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
    )  # fmt: skip
    task = progress.add_task("train", total=total, stats="")

    def on_log(record: dict[str, Any]) -> None:
        latest.update(record)
        stats = f"loss {record['loss']:.3f}  {record['bpp']:.3f} bpp  {record['psnr']:.2f} dB"
        if "val_bpp" in latest:
            stats += f"  val {latest['val_bpp']:.3f} bpp {latest['val_psnr']:.2f} dB"
        progress.update(task, stats=stats)
        if _state["verbose"]:
            progress.console.log(json.dumps(record))

    def on_val(record: dict[str, Any]) -> None:
        latest.update(record)
        progress.console.log(
            f"validation at step {record['step']}: {record['val_bpp']:.4f} bpp, {record['val_psnr']:.2f} dB"
        )

    hooks.on_step = lambda step, fraction: progress.update(task, completed=step)
    hooks.on_log, hooks.on_val = on_log, on_val
    with progress:
        yield hooks


@app.command()
def bench(
    folder: Annotated[Path, typer.Argument(help="Folder of test images (e.g. the Kodak set).")],
    codecs: Annotated[
        str, typer.Option("--codecs", help="Comma-separated: aec, jpeg, webp, avif.")
    ] = "aec,jpeg,webp,avif",
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    qualities: Annotated[
        str | None, typer.Option("-q", "--qualities", help="aecompress -q values to sweep, comma-separated.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write rate-distortion curves to this PNG.")
    ] = None,
    effort: EffortOpt = 0,
    content: ContentOpt = "auto",
) -> None:
    """Rate-distortion and speed of aecompress against JPEG, WebP and AVIF, with BD-rates vs JPEG."""
    with _user_errors():
        from aecompress import bench as bench_lib

        chosen = [c.strip() for c in codecs.split(",") if c.strip()]
        settings = {"aec": [int(q) for q in qualities.split(",")]} if qualities else None
        try:
            result = bench_lib.run(
                folder,
                chosen,
                model,
                device,
                settings,
                progress=lambda what: log.info("bench: %s", what),
                effort=effort,
                content=content,
            )
        except ValueError as exc:
            raise ImageError(str(exc)) from exc
        if plot is not None:
            bench_lib.plot(result, plot)
        typer.echo(json.dumps(result.to_json(), indent=2) if as_json else bench_lib.table(result))


@app.command()
def models() -> None:
    """List the codecs available (bundled and user-trained) with their measured Kodak figures."""
    with _user_errors():
        from aecompress.family import available_families, load_family
        from aecompress.modelfile import available_models, read_info, user_models_dir

        found = available_models()
        families = available_families()
        if not found and not families:
            typer.echo(f"no models found (user models go in {user_models_dir()})")
            return
        w = max([16] + [len(path.stem) + 1 for path in found])  # the name column
        for path in families:
            try:
                family = load_family(path)
            except AecError as exc:
                typer.echo(f"{path.name:{w}} {'family':12} unreadable: {exc}")
                continue
            parts = _served(family.members)
            typer.echo(f"{family.name:{w}} {'family':12} {_kodak_figures(family.card):36} {parts}")
            for variant in family.variants:
                swaps = ", ".join(f"{b} for {a}" for a, b in variant.models.items())
                swaps = _served(variant.members) or swaps
                when = f"images {variant.flat_share:.0%}+ flat"
                typer.echo(f"{'':{w}} {variant.kind:12} {when:36} {swaps}")
        for path in found:
            try:
                meta = read_info(path)
            except AecError as exc:
                typer.echo(f"{path.stem:{w}} {'?':12} {'unreadable: ' + str(exc)}")
                continue
            typer.echo(f"{meta.name:{w}} {meta.arch:12} {_kodak_figures(meta.card):36} {path}")


def _served(members: Sequence[Member]) -> str:
    """Which member serves which -q, for ``models``: neighbours of one model (a change of pace,
    pieces of a residual tail) as one slice, a residual tail marked."""
    slices: list[tuple[str, float, float]] = []
    for m in members:
        name = m.model + (" + residual" if m.residual else "")
        if slices and slices[-1][0] == name:
            slices[-1] = (name, slices[-1][1], m.quality[1])
        else:
            slices.append((name, m.quality[0], m.quality[1]))
    return ", ".join(f"{name} for -q {lo:g}-{hi:g}" for name, lo, hi in slices)


def _kodak_figures(card: dict[str, Any]) -> str:
    """A card's measured Kodak point (at -q 75 or the nearest measured), for 'models'."""
    kodak = card.get("kodak", {})
    if not isinstance(kodak, dict) or not {"bpp", "psnr"} <= kodak.keys():
        return "not measured"
    return f"Kodak {kodak['bpp']:.3f} bpp, {kodak['psnr']:.2f} dB"


def main() -> None:
    """Console-script entry point.

    Once torch is loaded, tearing the interpreter down costs a one-file call 0.7-0.9 s (freeing
    torch's libraries and state), a third of its time. Every output is written and closed by then,
    so the process leaves with ``os._exit`` after flushing, unless something still runs in the
    background (a worker process, a thread other than our idle zstd pool).
    """
    try:
        app()
        code = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if "torch" in sys.modules and _nothing_left_running():
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _nothing_left_running() -> bool:
    import multiprocessing
    import threading

    if multiprocessing.active_children():
        return False
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    return all(t.name.startswith("aec-zstd") for t in others)
