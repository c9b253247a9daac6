"""Whole folder trees: find the work, run it in parallel workers, and account for every file.

A run is a plan (``scan``: which files, where each goes, which are already up to date, which are
not images) executed by ``run``, which reports each file as it finishes and returns a summary.
Outputs are written atomically, so a run stopped at any point (Ctrl-C, a kill, a full disk) leaves
whole files only, and running it again resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aecompress import precision
from aecompress.defaults import DEFAULT_MAX_PIXELS, DEFAULT_QUALITY, GPU_BATCH
from aecompress.errors import AecError, OutputError
from aecompress.imageio import IMAGE_SUFFIXES, decoded_name

AEC_SUFFIX = ".aec"


@dataclass(frozen=True)
class Job:
    """One file to process: where it is, where its output goes, and its path relative to SRC."""

    source: Path
    target: Path
    rel: str
    size: int


@dataclass
class Outcome:
    """What happened to one file (also one line of the manifest)."""

    rel: str
    source: str
    target: str
    status: str  # done | skipped | failed | ignored
    reason: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    pixels: int = 0
    psnr: float | None = None
    seconds: float = 0.0

    @property
    def bpp(self) -> float | None:
        """Bits per pixel of the compressed side (the .aec file), when the pixel count is known."""
        if not self.pixels:
            return None
        compressed = self.bytes_in if self.source.lower().endswith(AEC_SUFFIX) else self.bytes_out
        return 8.0 * compressed / self.pixels

    def record(self) -> dict[str, Any]:
        """The manifest line: paths, bytes, bpp, status, reason and (with --verify) PSNR."""
        data = asdict(self)
        data["bpp"] = None if self.bpp is None else round(self.bpp, 5)
        data["seconds"] = round(self.seconds, 4)
        return data


@dataclass
class Plan:
    """The files of a run: to do, already up to date, and skipped as not ours to process."""

    src: Path
    dst: Path
    decode: bool
    todo: list[Job] = field(default_factory=list)
    up_to_date: list[Job] = field(default_factory=list)
    ignored: list[Outcome] = field(default_factory=list)

    @property
    def todo_bytes(self) -> int:
        return sum(job.size for job in self.todo)


@dataclass
class Options:
    """How each file is processed; mirrors the options of encode/decode."""

    decode: bool = False
    quality: float = DEFAULT_QUALITY
    target_bpp: float | None = None
    model: str | None = None
    device: str = "auto"
    verify: bool = False
    threads: int = 1
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    batched: bool | None = None  # same-sized images through the networks together; None: on a GPU
    effort: int = 0  # refinement iterations per image (codec.encode's effort)
    precision: str = "auto"  # the networks' precision in each worker (aecompress.precision)
    content: str = "auto"  # the kind of picture whose members of a family code each image


@dataclass
class Summary:
    """Totals of a run, for the closing table and the exit status."""

    done: int = 0
    skipped: int = 0
    ignored: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bpp: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    failures: list[Outcome] = field(default_factory=list)
    elapsed: float = 0.0
    interrupted: bool = False
    decode: bool = False

    def add(self, outcome: Outcome) -> None:
        if outcome.status == "done":
            self.done += 1
            self.bytes_in += outcome.bytes_in
            self.bytes_out += outcome.bytes_out
            if outcome.bpp is not None:
                self.bpp.append(outcome.bpp)
            if outcome.psnr is not None:
                self.psnr.append(outcome.psnr)
        elif outcome.status == "skipped":
            self.skipped += 1
        elif outcome.status == "ignored":
            self.ignored += 1
        else:
            self.failed += 1
            self.failures.append(outcome)

    def exit_code(self) -> int:
        """0 all well, 2 some files failed, 1 nothing could be done (every attempt failed)."""
        if self.failed and not (self.done or self.skipped):
            return 1
        return 2 if self.failed else 0

    def table(self) -> str:
        """The closing summary, one quantity per line, then each failure with its reason."""
        image_bytes, aec_bytes = (
            (self.bytes_out, self.bytes_in) if self.decode else (self.bytes_in, self.bytes_out)
        )
        ratio = f"{image_bytes / aec_bytes:.2f}:1 (image:aec)" if aec_bytes else "-"
        mean_bpp = f"{sum(self.bpp) / len(self.bpp):.4f}" if self.bpp else "-"
        rows = [
            ("done", str(self.done)),
            ("skipped (up to date)", str(self.skipped)),
            ("not images (skipped)", str(self.ignored)),
            ("failed", str(self.failed)),
            ("bytes in", f"{self.bytes_in:,}"),
            ("bytes out", f"{self.bytes_out:,}"),
            ("ratio", ratio),
            ("mean bpp", mean_bpp),
        ]
        if self.psnr:
            rows.append(("mean PSNR (verify)", f"{sum(self.psnr) / len(self.psnr):.2f} dB"))
        rows.append(("elapsed", f"{self.elapsed:.1f} s" + (" (interrupted)" if self.interrupted else "")))
        width = max(len(key) for key, _ in rows)
        lines = [f"{key:<{width}}  {value}" for key, value in rows]
        for failure in self.failures:
            lines.append(f"FAILED {failure.rel}: {failure.reason}")
        return "\n".join(lines)


def parse_shard(spec: str) -> tuple[int, int]:
    """'K/N' -> (K, N), K counted from 0 (as SLURM_ARRAY_TASK_ID and JOB_COMPLETION_INDEX are)."""
    try:
        k_text, n_text = spec.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError as exc:
        raise AecError(f"--shard {spec!r}: expected K/N, e.g. 0/4") from exc
    if n < 1 or not 0 <= k < n:
        raise AecError(f"--shard {spec!r}: need 0 <= K < N")
    return k, n


def in_shard(rel: str, shard: tuple[int, int] | None) -> bool:
    """Whether a file (by its path relative to SRC) belongs to this shard.

    The split hashes the relative path, so it needs no coordination, does not depend on the order
    files are listed in, and a file keeps its shard when others are added or removed.
    """
    if shard is None:
        return True
    k, n = shard
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n == k


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _walk(src: Path) -> Iterator[Path]:
    """Every file under src, recursively, in a stable order; symlinked folders are listed, not entered."""
    for folder, dirs, files in os.walk(src, followlinks=False):
        dirs.sort()
        names = files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        for name in sorted(names):
            yield Path(folder) / name


def _target_for(rel: Path, dst: Path, decode: bool) -> Path:
    if decode:
        return dst / rel.parent / decoded_name(rel.name)
    return dst / rel.parent / (rel.name + AEC_SUFFIX)


def scan(
    src: Path, dst: Path, decode: bool, force: bool = False, shard: tuple[int, int] | None = None
) -> Plan:
    """List the work for SRC -> DST: inputs are images (or .aec files with ``decode``).

    An output newer than its input counts as up to date unless ``force``. SRC and DST may not
    contain one another, which is what guarantees that no input is ever overwritten.
    """
    if not src.is_dir():
        raise AecError(f"{src}: not a folder")
    real_src, real_dst = src.resolve(), dst.resolve()
    if _overlaps(real_src, real_dst):
        raise OutputError(f"{dst} and {src} overlap: the output tree must be outside the input tree")
    if dst.exists() and not dst.is_dir():
        raise OutputError(f"{dst}: exists and is not a folder")
    plan = Plan(src, dst, decode)
    for path in _walk(src):
        rel = path.relative_to(src)
        rel_text = rel.as_posix()
        if not in_shard(rel_text, shard):
            continue
        wanted = path.name.lower().endswith(AEC_SUFFIX) if decode else path.suffix.lower() in IMAGE_SUFFIXES
        if path.is_symlink() and path.is_dir():
            plan.ignored.append(
                Outcome(rel_text, str(path), "", "ignored", "symlinked folder (not followed)")
            )
            continue
        if path.is_symlink():
            real = path.resolve()
            if real_src not in real.parents:
                plan.ignored.append(
                    Outcome(rel_text, str(path), "", "ignored", "symlink out of the input tree")
                )
                continue
        if not wanted:
            kind = "not a .aec file" if decode else "not an image"
            plan.ignored.append(Outcome(rel_text, str(path), "", "ignored", kind))
            continue
        try:
            stat = path.stat()
        except OSError as exc:
            plan.ignored.append(Outcome(rel_text, str(path), "", "ignored", f"cannot stat ({exc.strerror})"))
            continue
        target = _target_for(rel, dst, decode)
        job = Job(path, target, rel_text, stat.st_size)
        if not force and _newer(target, stat.st_mtime_ns):
            plan.up_to_date.append(job)
        else:
            plan.todo.append(job)
    return plan


def _newer(target: Path, source_mtime_ns: int) -> bool:
    try:
        return target.stat().st_mtime_ns > source_mtime_ns
    except OSError:
        return False


def skipped_outcome(job: Job) -> Outcome:
    """The manifest line of a file whose output is already up to date."""
    try:
        out = job.target.stat().st_size
    except OSError:
        out = 0
    return Outcome(job.rel, str(job.source), str(job.target), "skipped", "up to date", job.size, out)


def default_workers(device: str) -> int:
    """Parallel workers when -j is not given: one per core on a CPU (measured fastest), one on a GPU.

    On a GPU one process batches images through the networks; several would only contend for it.
    """
    from aecompress.device import select_device

    if select_device(device).type == "cuda":
        return 1
    return max(1, cpu_count())


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _process(job: Job, options: Options) -> Outcome:
    """Encode or decode one file; every error becomes a failed outcome, never an exception."""
    from aecompress.fileio import atomic_write, remove_stale_temps

    start = time.perf_counter()
    outcome = Outcome(job.rel, str(job.source), str(job.target), "failed", bytes_in=job.size)
    try:
        data, pixels, psnr = _decode_one(job, options) if options.decode else _encode_one(job, options)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(job.target)
        atomic_write(job.target, data, force=True)
        outcome.status, outcome.bytes_out, outcome.pixels, outcome.psnr = "done", len(data), pixels, psnr
    except AecError as exc:
        outcome.reason = str(exc).removeprefix(f"{job.source}: ")
    except OSError as exc:
        outcome.reason = f"{exc.strerror or exc}"
    except Exception as exc:  # one bad file never stops the rest; the reason says what it was
        outcome.reason = f"{type(exc).__name__}: {exc}"
    outcome.seconds = time.perf_counter() - start
    return outcome


def _encode_one(job: Job, options: Options) -> tuple[bytes, int, float | None]:
    from aecompress import codec
    from aecompress.imageio import read_image

    image = read_image(job.source, options.max_pixels)
    result = codec.encode(
        image,
        options.model,
        options.quality,
        options.device,
        effort=options.effort,
        target_bpp=options.target_bpp,
        content=options.content,
    )
    psnr = _verify(result.data, image, options) if options.verify else None
    return result.data, image.width * image.height, psnr


def _verify(data: bytes, image: Any, options: Options) -> float:
    from aecompress import codec
    from aecompress.metrics import psnr

    restored = codec.decode(data, options.device, options.model, max_pixels=None)
    return psnr(image.rgb, restored.rgb)


def _decode_one(job: Job, options: Options) -> tuple[bytes, int, float | None]:
    from aecompress import codec
    from aecompress.imageio import encode_image_bytes, output_format

    image = codec.decode(
        job.source.read_bytes(),
        options.device,
        options.model,
        max_pixels=options.max_pixels,
        near=[job.source.parent],
    )
    return encode_image_bytes(image, output_format(job.target)), image.width * image.height, None


_worker_options = Options()


def _init_worker(options: Options) -> None:
    """Worker set-up: its share of the cores, and signals left to the parent (Ctrl-C) or fatal (TERM)."""
    import torch

    global _worker_options
    _worker_options = options
    precision.set(options.precision)
    torch.set_num_threads(max(1, options.threads))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_term)


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _worker_task(job: Job) -> Outcome:
    return _process(job, _worker_options)


@dataclass
class _Context:
    """What the runners share: the work, how to do it, where outcomes go, when to stop."""

    plan: Plan
    options: Options
    report: Callable[[Outcome], None]
    should_stop: Callable[[], bool]
    summary: Summary


def run(
    plan: Plan,
    options: Options,
    workers: int,
    on_outcome: Callable[[Outcome], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> Summary:
    """Process the plan with ``workers`` processes (1: in this process), reporting every file.

    ``should_stop`` is polled between files: once it says so, no new file starts, the ones in
    flight finish (their outputs are whole), and the summary is marked interrupted.
    """
    summary = Summary(decode=plan.decode)
    start = time.perf_counter()

    def report(outcome: Outcome) -> None:
        summary.add(outcome)
        on_outcome(outcome)

    for outcome in plan.ignored:
        report(outcome)
    for job in plan.up_to_date:
        report(skipped_outcome(job))
    if plan.todo:
        try:
            plan.dst.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {plan.dst}: {exc.strerror or exc}") from exc
    ctx = _Context(plan, options, report, should_stop, summary)
    if workers <= 1:
        _run_here(ctx)
    else:
        _run_pool(ctx, workers)
    summary.elapsed = time.perf_counter() - start
    return summary


def _run_here(ctx: _Context) -> None:
    import torch

    from aecompress.device import select_device

    if ctx.options.threads:
        torch.set_num_threads(max(1, ctx.options.threads))
    batched = (
        select_device(ctx.options.device).type == "cuda"
        if ctx.options.batched is None
        else ctx.options.batched
    )
    if batched and ctx.options.target_bpp is None:
        _run_gpu_batches(ctx)
        return
    for job in ctx.plan.todo:
        if ctx.should_stop():
            ctx.summary.interrupted = True
            return
        ctx.report(_process(job, ctx.options))


def _run_gpu_batches(ctx: _Context) -> None:
    """On a GPU: read a group of files, run same-sized ones through the networks together."""
    for first in range(0, len(ctx.plan.todo), GPU_BATCH):
        if ctx.should_stop():
            ctx.summary.interrupted = True
            return
        group = ctx.plan.todo[first : first + GPU_BATCH]
        start = time.perf_counter()
        outcomes = [Outcome(j.rel, str(j.source), str(j.target), "failed", bytes_in=j.size) for j in group]
        try:
            results = _batched_results(group, ctx.options)
        except Exception:  # e.g. the GPU ran out of memory for the batch: one file at a time instead
            for job in group:
                ctx.report(_process(job, ctx.options))
            continue
        for job, outcome, result in zip(group, outcomes, results, strict=True):
            if isinstance(result, AecError):
                outcome.reason = str(result).removeprefix(f"{job.source}: ")
            else:
                _finish(job, outcome, result[0], result[1], ctx.options)
            outcome.seconds = (time.perf_counter() - start) / len(group)
            ctx.report(outcome)


def _batched_results(group: list[Job], options: Options) -> list[tuple[bytes, Any] | AecError]:
    """Encode (or decode) a group of files together; per file, its output and image, or its error."""
    from aecompress import codec
    from aecompress.imageio import encode_image_bytes, output_format, read_image

    results: list[tuple[bytes, Any] | AecError] = []
    if options.decode:
        datas: list[bytes | AecError] = []
        for job in group:
            try:
                datas.append(job.source.read_bytes())
            except OSError as exc:
                datas.append(AecError(f"cannot read ({exc.strerror or exc})"))
        readable = [d for d in datas if isinstance(d, bytes)]
        folders = list(dict.fromkeys(job.source.parent for job in group))
        many = codec.decode_many(
            readable, options.device, options.model, GPU_BATCH, max_pixels=options.max_pixels, near=folders
        )
        decoded = iter(many)
        for job, data in zip(group, datas, strict=True):
            item = data if isinstance(data, AecError) else next(decoded)
            if isinstance(item, AecError):
                results.append(item)
                continue
            try:
                results.append((encode_image_bytes(item, output_format(job.target)), item))
            except AecError as exc:
                results.append(exc)
    else:
        images: list[Any] = []
        for job in group:
            try:
                images.append(read_image(job.source, options.max_pixels))
            except AecError as exc:
                images.append(exc)
        to_encode = [image for image in images if not isinstance(image, AecError)]
        encoded = iter(
            codec.encode_many(
                to_encode,
                options.model,
                options.quality,
                options.device,
                GPU_BATCH,
                effort=options.effort,
                content=options.content,
            )
        )
        for image in images:
            results.append(image if isinstance(image, AecError) else (next(encoded).data, image))
    return results


def _finish(job: Job, outcome: Outcome, data: bytes, image: Any, options: Options) -> None:
    """Write one batched result and fill in its outcome."""
    from aecompress.fileio import atomic_write, remove_stale_temps

    try:
        job.target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(job.target)
        atomic_write(job.target, data, force=True)
    except AecError as exc:
        outcome.reason = str(exc)
        return
    outcome.status, outcome.bytes_out = "done", len(data)
    outcome.pixels = image.width * image.height
    if options.verify and not options.decode:
        outcome.psnr = _verify(data, image, options)


def _run_pool(ctx: _Context, workers: int) -> None:
    """A pool of spawned workers, fed a few files ahead so that a stop request acts quickly.

    When a worker dies (killed, out of memory) the pool is rebuilt and the files it had in flight
    are tried once more; a file that is in flight in two broken pools is failed.
    """
    context = multiprocessing.get_context("spawn")
    queue = list(reversed(ctx.plan.todo))
    tries: dict[str, int] = {}
    while queue:
        pending: dict[Future[Outcome], Job] = {}
        broken = False
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(ctx.options,)
        ) as pool:
            try:
                while not broken:
                    while queue and len(pending) < 2 * workers and not ctx.should_stop():
                        job = queue.pop()
                        pending[pool.submit(_worker_task, job)] = job
                    if not pending:
                        break
                    finished, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                    for future in finished:
                        try:
                            outcome = future.result()
                        except BrokenProcessPool:
                            broken = True
                            continue
                        pending.pop(future)
                        ctx.report(outcome)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        for job in pending.values():
            tries[job.rel] = tries.get(job.rel, 0) + 1
            if tries[job.rel] >= 2:
                ctx.report(
                    Outcome(
                        job.rel, str(job.source), str(job.target), "failed", "worker process died", job.size
                    )
                )
            else:
                queue.append(job)
        if ctx.should_stop():
            break
    ctx.summary.interrupted = bool(queue) and ctx.should_stop()
