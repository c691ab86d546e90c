"""Bulk processing: every video of an archive through one pipeline, resumable, reported.

Every good video comes back exactly once; every bad one is a typed row in the report; the
run survives crashes. Videos are planned inside the dataset (one plan task each), so the
first chunks start within seconds whatever the archive's size; the report is rewritten as
videos finish. Re-running the same command skips videos whose output records this run's
settings and source, and inside a video that was cut off reuses the segments already
encoded in its work directory (:mod:`raypipe.reuse`). ``resume=False`` starts over. Exit
codes: 0 when every video is done or skipped, 3 when some failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from raypipe import storage
from raypipe.archive_report import (
    REPORT_NAME,
    ArchiveReport,
    ReportJournal,
    join_notes,
    previous_rows,
    run_report_path,
    stats_doc,
    write_report,
)
from raypipe.config import LISTED_OUTPUT_EXTENSION, EncodeConfig, RunConfig, build_run_config
from raypipe.distributed.chunk_log import ChunkLog
from raypipe.distributed.chunk_task import WORK_SUFFIX, output_held, remove_work, work_dir_for
from raypipe.distributed.cluster import command_ends_if_cluster_lost
from raypipe.distributed.dataset import archive_source, build_dataset
from raypipe.distributed.monitor import ArchiveProgress
from raypipe.distributed.planning import VideoJob, VideoResult
from raypipe.distributed.runner import Runner
from raypipe.distributed.setup import (
    check_side_file,
    load_run,
    model_facts,
    same_file,
    start_run,
    table_output,
)
from raypipe.distributed.stats import gpu_stats
from raypipe.errors import ConfigError, StorageError
from raypipe.inputs import list_inputs
from raypipe.media.containers import container_refuses, extensions_holding
from raypipe.media.encode import option_problem
from raypipe.media.picture import PictureFormat
from raypipe.media.probe import probe
from raypipe.media.source import is_local, local_path

log = logging.getLogger("raypipe")

DRAW_TIMEOUT_S = 600


def process_archive(
    inputs: str | Sequence[str],
    output_dir: str,
    config: RunConfig | None = None,
    *,
    resume: bool = True,
    report_path: str | None = None,
    **options: Any,
) -> ArchiveReport:
    """Process every video named by ``inputs`` into ``output_dir``; return the report.

    ``inputs``: a directory/prefix, a glob, a URI list, a CSV/Parquet manifest (see
    :mod:`raypipe.inputs`) or a list of URIs. ``options`` as for
    :func:`raypipe.process_video`. The report is written to ``report_path`` (default
    ``OUTPUT_DIR/_raypipe-report.parquet``) as Parquet.
    """
    cfg = build_run_config(config, **options)
    started = time.monotonic()
    # the tasks' working directory differs
    output_dir = storage.absolute(storage.path_text(output_dir, "output_dir"))
    model = load_run(cfg)
    if isinstance(inputs, (str, os.PathLike)):  # a pathlib.Path, as output_dir takes
        inputs = storage.path_text(inputs, "inputs")
    elif not isinstance(inputs, Iterable):
        raise ConfigError(f"inputs must be a path, a URL or a list of them, got {inputs!r}")
    items = (
        list_inputs(inputs, output_dir)
        if isinstance(inputs, str)
        else _items_of([storage.path_text(i, "an input") for i in inputs])
    )
    report_path = os.fspath(report_path) if report_path else storage.join(output_dir, REPORT_NAME)
    if not report_path.lower().endswith(".parquet"):  # Parquet under another name (a sweep)
        raise ConfigError(
            f"the archive report is Parquet: name it REPORT.parquet, got {report_path!r}"
        )
    previous = previous_rows(report_path)
    jobs = _jobs(items, output_dir, tensor=model.tensor, encode=cfg.encode)
    # the report and stats may not replace an input, the list naming them or an output
    taken = {i.uri: "an input of this archive" for i in items}
    taken.update({j.output: "an output of this archive" for j in jobs if j.output != j.uri})
    if isinstance(inputs, str) and storage.split(inputs)[1].lower().endswith(_LISTS):
        taken[storage.absolute(inputs)] = "the list of this archive's inputs"
    sides = [("--report (report_path)", report_path)]
    sides += [("--stats (stats_path)", cfg.stats_path)] if cfg.stats_path else []
    for label, path in sides:  # before OUTPUT_DIR is made (it was, then refused): the
        # folders of those outside it too
        check_side_file(label, path, taken, folder=not _inside(path, output_dir))
    made = is_local(output_dir) and not os.path.exists(local_path(output_dir))
    problem = storage.writable_dir_problem(output_dir, make=True)
    if problem:
        raise ConfigError(f"OUTPUT_DIR '{output_dir}': {problem}")
    try:
        for label, path in sides:
            if _inside(path, output_dir):
                storage.check_file_path(label, path)
        with output_dir_lock(output_dir):
            report = _run(
                cfg, model, jobs, output_dir, report_path, previous, started, resume=resume
            )
            _tidy_work_dirs(output_dir, jobs, report)
    except BaseException:
        if made:  # a run that failed as it started (no GPU) left it, empty (a sweep)
            with contextlib.suppress(OSError):
                os.rmdir(local_path(output_dir))  # (not if anything is in it)
        raise
    return report


_LISTS = (".txt", ".lst", ".csv", ".parquet")
"""The extensions of an input list or manifest (:func:`raypipe.inputs.list_inputs`)."""


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies under ``folder`` (both absolute, or URLs)."""
    return storage.absolute(path).startswith(folder.rstrip("/") + "/")


def _tidy_work_dirs(output_dir: str, jobs: list[VideoJob], report: ArchiveReport) -> None:
    """Warn of the work folders in a local ``output_dir`` that no input of this run owns:
    an earlier run stopped inside those videos, and they are not listed now (removed, or
    listed by another run into the same folder, which may still resume them: so they are
    named, not deleted). Before, they stayed unmentioned, holding their segments' bytes.
    Those of the videos this run skipped (their outputs are finished, as these settings
    make them) are removed: a run killed while it made them anew (``--no-resume``, other
    settings) left them for good, and no resume would take them (a sweep); not while a
    ``raypipe run`` writes that output (its lock)."""
    if not is_local(output_dir):
        return  # a listing of a whole bucket prefix: not worth it for a note
    owned = {local_path(work_dir_for(job.output)): job.output for job in jobs}
    skipped = {row["output"] for row in report.rows if row["status"] == "skipped"}
    stale = []
    for parent, dirs, _ in os.walk(local_path(output_dir)):
        for name in list(dirs):
            if name.startswith(".") and name.endswith(WORK_SUFFIX):
                dirs.remove(name)  # segments inside, no outputs
                path = os.path.join(parent, name)
                if path not in owned:
                    stale.append(path)
                elif owned[path] in skipped:
                    _remove_finished_work(path, owned[path])
    if stale:
        log.warning(
            "%d work folder(s) in OUTPUT_DIR belong to no input of this run (%s%s): segments "
            "of an earlier run that stopped inside those videos; delete them if those "
            "videos are gone for good, or rerun with them listed to finish them",
            len(stale),
            stale[0],
            ", ..." if len(stale) > 1 else "",
        )


def _remove_finished_work(work_dir: str, output: str) -> None:
    """Remove the work folder of a finished ``output``, unless a ``raypipe run`` is
    writing that output now."""
    try:
        with output_held(output, tensor=False):
            remove_work(work_dir)
    except ConfigError:
        return  # another run's, in use


def _run(
    cfg: RunConfig,
    model: Any,
    jobs: list[VideoJob],
    output_dir: str,
    report_path: str,
    previous: Any,
    started: float,
    *,
    resume: bool,
) -> ArchiveReport:
    """The archive's run, its inputs listed and its paths checked."""
    progress = ArchiveProgress(len(jobs), label="archive", enabled=not cfg.quiet)
    progress.begin()  # from here on a line every interval, Ray's start included
    try:
        run = start_run(cfg, model)
        progress.shared = run.shared
    except BaseException:
        progress.stop()
        raise
    cfg, actors, key = run.cfg, run.actors, run.key
    order = {job.uri: i for i, job in enumerate(jobs)}
    chunk_log = ChunkLog(spill=True)
    drawer = _ReportDrawer(run_report_path(report_path))
    journal = ReportJournal(report_path, previous, order)
    runner: Runner | None = None
    ended = False
    try:
        runner = Runner(
            cfg,
            chunk_log=chunk_log,
            on_frames=progress.update,
            on_planned=progress.video_planned,
        )
        source = archive_source(
            jobs, cfg.chunk, resume=resume, key=key, model=model_facts(model), encode=cfg.encode
        )
        ds = build_dataset(
            source, cfg, actors, model, warmup_picture=_first_picture(jobs), handoff=run.handoff
        )
        gpu_samples: list[dict[str, Any]] = []  # NVML samples (GPU runs only)
        gpu_notes: set[str] = set()
        # the cluster gone (--address): the report keeps what is known, as on Ctrl-C
        unfinished = runner.unfinished
        with command_ends_if_cluster_lost(
            lambda: _write_partial_report(journal, unfinished()),
            "the archive stops, its finished videos in its report (run it again to resume)",
        ):
            for result in runner.run(ds):  # the driver keeps a report row per video, no more
                gpu_samples.extend(result.gpu_samples)
                gpu_notes.update(result.gpu_notes)
                if result.status == "failed":
                    _note_earlier_output(result)
                    progress.message(
                        f"failed: {result.uri}: {result.error_type}: {result.error_message}"
                    )
                journal.add(result)
                progress.video_result(
                    result.status,
                    result.frames_in,
                    planned=result.status != "skipped" and result.chunks > 0,
                )
        report = ArchiveReport(
            rows=journal.rows(),
            path=report_path,
            wall_seconds=time.monotonic() - started,
            provider_notes=chunk_log.provider_notes,
            gpu=gpu_stats(gpu_samples, sorted(gpu_notes), uses_gpu=actors.uses_gpu),
        )
        ended = True  # every video's output is written or its failure known
        with _side_file(report, output_dir, stale=(report.path, run_report_path(report.path))):
            write_report(report)
        head = stats_doc(  # totals, GPU samples; chunks: from the log
            report, actors.workers, chunk_count=chunk_log.count, providers=chunk_log.providers
        )
        if chunk_log.count:
            drawer.draw(head, chunk_log.spill_path, progress)
        else:  # no chunk ran (every video skipped): an earlier run's picture is not this one's
            with contextlib.suppress(OSError):
                storage.remove_file(run_report_path(report_path))
        if cfg.stats_path:
            with _side_file(report, output_dir):
                _write_stats(head, chunk_log, cfg.stats_path)
    except BaseException:  # Ctrl-C, an error: the report keeps what is known so far
        if ended:  # its report written, or not writable: a partial one is no better
            progress.stop()
            raise
        for result in runner.finished_already() if runner is not None else []:
            journal.add(result)  # assembled, its output there, its result not yet taken
        _write_partial_report(journal, runner.unfinished() if runner is not None else set())
        progress.stop()
        raise
    finally:
        drawer.cancel()  # no chunk ran, or the run failed: nothing to draw
        chunk_log.close()
    progress.close(
        f"archive: {report.count('done')} done, {report.count('skipped')} skipped, "
        f"{report.count('failed')} failed of {len(report.rows)} -> {output_dir}"
    )
    return report


@contextlib.contextmanager
def _side_file(
    report: ArchiveReport, output_dir: str, *, stale: tuple[str, ...] = ()
) -> Iterator[None]:
    """The archive's report or ``--stats`` written in the block, after every video: where
    it cannot be (a full disk), a :class:`StorageError` that says the videos were processed
    (it read as if nothing had been, with no summary; a sweep); ``stale``: the report and its
    picture, whose earlier run's versions are removed then, not left to tell another story."""
    try:
        yield
    except StorageError as e:
        for path in stale:
            with contextlib.suppress(OSError):
                storage.remove_file(path)
        raise StorageError(
            f"the archive's videos were processed ({report.count('done')} done, "
            f"{report.count('skipped')} skipped, {report.count('failed')} failed of "
            f"{len(report.rows)} -> {output_dir}), but {e}; run it again once there is "
            "space: it skips the videos done"
        ) from e


LOCK_NAME = ".raypipe-archive.lock"


@contextlib.contextmanager
def output_dir_lock(output_dir: str) -> Iterator[None]:
    """Hold ``output_dir`` (a local one) for this archive run: a second run on it fails at
    once, naming the first. Two runs on one folder removed each other's segments (videos
    failed with "segment ... is missing from the work directory") and each wrote its own
    report over the other's (a sweep). An advisory lock (``flock``) on a hidden file,
    released when the run ends or its process dies; object stores hold no lock."""
    if not is_local(output_dir):
        yield
        return
    busy = (
        f"OUTPUT_DIR '{output_dir}' is being written by another raypipe archive ({{who}}); "
        "wait for it to end, or give this run another OUTPUT_DIR"
    )
    with storage.held(os.path.join(local_path(output_dir), LOCK_NAME), busy):
        yield


def _note_earlier_output(result: VideoResult) -> None:
    """A failed video whose output path holds an earlier run's output (made from the
    input as it was, or with other settings) keeps it: say so in its row, so that the
    report and the folder agree (the row's output is empty)."""
    try:
        # (an input refused before planning has its own URI as its output: no output)
        there = result.output not in ("", result.uri) and storage.exists(result.output)
    except Exception:  # noqa: BLE001 - an unreachable store: nothing to say
        there = False
    if there:
        result.note = join_notes(
            result.note, f"an earlier run's output is still at {result.output}, left as it is"
        )


def _write_partial_report(journal: ReportJournal, unfinished: set[str]) -> None:
    """The rows of the videos finished before a run stopped early, and the previous
    report's for the rest (``unfinished``: those begun); a failure to write it must not
    hide why the run stopped."""
    if not journal.reached and not unfinished:
        return  # the previous report (if any) says as much as there is to say
    try:
        journal.write(unfinished)
    except Exception as e:  # noqa: BLE001 - logged; the run's own error follows
        log.warning("could not write the report %s: %s", journal.path, e)


def _first_picture(jobs: list[VideoJob]) -> PictureFormat | None:
    """The first video's picture, for the actors' warm-up batch (None: unknown; the actors
    then warm up on their first chunk). Probing it costs one index read."""
    for job in jobs:
        if job.error:
            continue
        try:
            return probe(job.uri).picture_format
        except Exception:  # noqa: BLE001 - the video's own plan task reports its error
            return None
    return None


def _items_of(uris: list[str]) -> list[Any]:
    from raypipe.inputs import _from_uris

    return _from_uris(uris)


def _file_key(uri: str) -> object:
    """What names ``uri``'s file whatever the path's spelling (a link, ``..``): a local
    file's device and inode, else the URL; ``None`` for a local file that is not there."""
    if not is_local(uri):
        return uri
    try:
        st = os.stat(local_path(uri))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _listed_files(items: list[Any]) -> dict[object, str]:
    """The archive's inputs by :func:`_file_key`: an output that is one of them is refused
    (a manifest that wrote a.mp4 to b.mp4 and b.mp4 to a.mp4 replaced an original input)."""
    keys = {}
    for item in items:
        key = _file_key(item.uri)
        if key is not None:
            keys.setdefault(key, item.uri)
    return keys


def _jobs(
    items: list[Any],
    output_dir: str,
    *,
    tensor: bool = False,
    codec: str = "",
    encode: EncodeConfig | None = None,
) -> list[VideoJob]:
    """A job for each input item: its output, or why it has none. ``codec``: ``encode``'s,
    where no ``encode`` is given."""
    codec = encode.codec if encode is not None else codec
    jobs: list[VideoJob] = []
    seen_inputs: dict[str, int] = {}  # how often each input was listed so far
    first_outputs: dict[str, str] = {}  # each input's first listing's output
    switched: dict[str, list[str]] = {}  # extension an output took: the ones it would have had
    placed = []  # (item, output, its own name: the output's extension is the input's)
    for item in items:
        own = not item.renamed and not item.named  # a manifest's output is not its own name
        if not tensor and item.relative_output and not item.named:
            relative = _holding_output(item.relative_output, codec)
            if relative != item.relative_output:
                before = os.path.splitext(item.relative_output)[1]
                switched.setdefault(os.path.splitext(relative)[1], []).append(before)
                item = dataclasses.replace(item, relative_output=relative)
                own = False
        if tensor:  # analysis: one Parquet partition per video
            output = table_output(output_dir, item.uri)
        else:
            output = storage.join(output_dir, item.relative_output) if item.relative_output else ""
        placed.append((item, output, own))
    owners = _output_owners(placed)
    inputs = _listed_files(items)
    for item, output, _ in placed:
        error = item.error
        owner = owners.get(output)
        listed = inputs.get(_file_key(output)) if output and not tensor else None
        if not error and item.uri in seen_inputs:
            error = f"input '{item.uri}' is listed more than once; it is processed once"
            first = first_outputs.get(item.uri, "")
            if item.relative_output and first and item.relative_output != first:
                error += (  # which output was dropped went unsaid (a sweep)
                    f", into '{first}': this line's output '{item.relative_output}' is not "
                    "written (an input makes one output; copy the file to make another)"
                )
            output = ""  # the first listing's output is not this job's
        elif not error and owner is not None and owner.uri != item.uri:
            error = (
                f"output '{item.relative_output}' is claimed by {owner.claims} inputs: it is "
                f"written for '{owner.uri}'{' (its own name)' if owner.own else ''}; give "
                "this one another output"
            )
            if item.renamed:  # clip.mp4 and clip.wmv, whose output is clip.mp4 too
                error += (
                    f" (this input's extension is one raypipe does not write, so its output "
                    f"is {LISTED_OUTPUT_EXTENSION}: name it in a CSV manifest's output column)"
                )
            output = ""  # it has none: an output there is the owner's
        elif not error and output and not tensor and same_file(item.uri, output):
            error = (
                f"output '{output}' is the input; write the archive to another folder (raypipe "
                "does not replace its inputs)"
            )
        elif not error and listed is not None:
            error = (
                f"output '{output}' is another input of this archive ('{listed}'); raypipe "
                "does not replace its inputs: give this one another output"
            )
        refused = container_refuses(output, codec) if output and not tensor else ""
        if not refused and output and not tensor and encode is not None:
            refused = option_problem(encode, output)  # --codec auto: this output's encoder
        problem = f"output '{item.relative_output}': {refused}" if refused else ""
        jobs.append(
            VideoJob(
                uri=item.uri,
                output=output or item.uri,
                error=error,
                output_problem=problem,
                listed_before=seen_inputs.get(item.uri, 0),
            )
        )
        seen_inputs[item.uri] = seen_inputs.get(item.uri, 0) + 1
        first_outputs.setdefault(item.uri, item.relative_output)
    if not jobs:
        raise ConfigError("no inputs found; check the directory, glob or list")
    renamed = sorted(
        {os.path.splitext(i.uri)[1].lower() or "none" for i in items if i.renamed}
    )  # "none": a listed folder, or a file with no extension (it printed "(, .txt)")
    if renamed:
        log.warning(
            "%d input(s) have an extension raypipe does not write (%s): their outputs are %s "
            "files (a CSV manifest's output column names others)",
            sum(i.renamed for i in items),
            ", ".join(renamed),
            LISTED_OUTPUT_EXTENSION,
        )
    for ext, before in switched.items():
        log.warning(
            "%d output(s) would be %s files, which cannot hold %s video: they are %s files "
            "(a CSV manifest's output column names others)",
            len(before),
            ", ".join(sorted(set(before))),
            codec,
            ext,
        )
    return jobs


@dataclasses.dataclass(frozen=True)
class _Owner:
    """The input an output is written for, whether it is that input's own name, and how
    many inputs claim the output."""

    uri: str
    own: bool
    claims: int


def _output_owners(placed: list[tuple[Any, str, bool]]) -> dict[str, _Owner]:
    """Each output's owner among the inputs that claim it: an input whose own name it is
    (``clip.mp4`` for ``clip.mp4``, not ``clip.flv`` whose output takes ``.mp4``), else the
    first listed. Before, the first in sorted order won: ``clip.flv`` took ``clip.mp4``'s
    output from it, and a resumed archive replaced ``clip.mp4``'s finished output with
    another video's."""
    claims: dict[str, dict[str, bool]] = {}  # output -> claiming input -> its own name
    for item, output, own in placed:
        if output and not item.error:  # a second listing of one input is not a claim
            claims.setdefault(output, {}).setdefault(item.uri, own)
    owners = {}
    for output, inputs in claims.items():
        uri = next((u for u, own in inputs.items() if own), next(iter(inputs)))
        owners[output] = _Owner(uri=uri, own=inputs[uri], claims=len(inputs))
    return owners


_HOLDING_EXTENSIONS = (".mp4", ".mov", ".mkv")
"""Where an archive's output goes when its mirrored extension cannot hold the codec asked
for, the first that can: ProRes or DNxHD from MP4 inputs into ``.mov``, VP9 from MOV
inputs into ``.mp4``, H.264 from WebM inputs into ``.mp4``."""


def _holding_output(relative: str, codec: str) -> str:
    """``relative`` with the first of :data:`_HOLDING_EXTENSIONS` whose container holds
    ``codec``'s video where its own cannot (as it is when no other can: the output's
    problem says so)."""
    if not codec or not container_refuses(relative, codec):
        return relative  # "auto" is always held: it follows the container
    holding = extensions_holding(codec, _HOLDING_EXTENSIONS)
    return os.path.splitext(relative)[0] + holding[0] if holding else relative


def _write_stats(head: dict[str, Any], chunk_log: ChunkLog, stats_path: str) -> None:
    """The ``--stats`` JSON: ``head`` with the chunk log's records, written one record at a
    time (built next to it when local, in the temp dir when remote, then committed), so the
    driver's memory stays what the run had in flight."""
    staged = storage.local_staging(stats_path, ".json")
    try:
        chunk_log.write_stats(head, staged)
        storage.commit(staged, stats_path)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)


_DRAW = (  # the child's program: target and title as arguments; on stdin, once the run is
    # done, the stats head and the chunk log's spill file
    "import json, sys; from raypipe.report import draw_report, import_plotting; "
    "from raypipe.distributed.chunk_log import read_chunk_log; import_plotting(); "
    "given = json.load(sys.stdin); "
    "doc = {**given['head'], 'chunks': list(read_chunk_log(given['spill']))}; "
    "draw_report(doc, sys.argv[1], title=sys.argv[2])"
)


class _ReportDrawer:
    """The child process that draws an archive's run report PNG (next to the Parquet
    report, when chunks ran), so that neither the chunk records nor the plotting library
    ever sit in the driver. It starts with the run and loads Python, raypipe's report and
    matplotlib (about 1.2 s on a 2-core machine) while the run goes on; then it waits for
    the stats head and the chunk log's spill file on its stdin (:meth:`draw`), and draws.
    Never fatal: the videos and the report are written before it draws."""

    def __init__(self, target: str) -> None:
        self.error = ""
        self.proc: subprocess.Popen[str] | None = None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _DRAW, target, "raypipe archive"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"

    def draw(self, head: dict[str, Any], spill: str, progress: ArchiveProgress) -> None:
        """Send ``head`` and the spill file ``spill`` (every record on disk:
        ``ChunkLog.spill_path``), wait for the picture; a failure becomes a message."""
        if self.proc is None:
            progress.message(f"run report not drawn: {self.error}")
            return
        try:
            given = json.dumps({"head": head, "spill": spill})
            _, stderr = self.proc.communicate(given, timeout=DRAW_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            progress.message(f"run report not drawn: {type(e).__name__}: {e}")
            return
        if self.proc.returncode == 0:
            return
        last = (stderr.strip().splitlines() or [f"exit status {self.proc.returncode}"])[-1]
        if "No module named 'matplotlib'" in last:
            progress.message("run report not drawn (matplotlib is missing); pip install matplotlib")
        else:
            progress.message(f"run report not drawn: {last}")

    def cancel(self) -> None:
        """Stop the child if it is still waiting or drawing (nothing to draw, or the run
        failed, or the drawing timed out), and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
