"""`RayEngine`: decode + encode on a Ray cluster with Ray Data (``index --engine ray``).

The driver (this process) scans, reuses moved files and sweeps deleted ones exactly as a
local run does (`clipsearch.ingest.pipeline.Indexer`); only the files left to encode are
sent to the cluster. They become a Ray Dataset of small blocks of file records, mapped
with ``map_batches`` over an actor pool: each actor loads the model once (one model per
actor, on CPU or on a GPU share) and runs the same `EncodeLoop` a local run uses — decode
threads overlapping the encoder — on each block, returning the finished files as an
Arrow item table (`clipsearch.store.item_table`, float16 vectors as the catalog stores
them). Ray Data's streaming executor keeps only a bounded number of blocks in flight
(back-pressure from the driver, which commits one block per catalog transaction), so a
run of any size holds a few blocks in memory. Because every file reaches the catalog
through the same `Indexer` write path, a Ray run stores the same rows as a local one,
records failures the same way, and resumes the same way: committed files are unchanged
on the next scan and are not sent again.

What a local run does besides encoding, the actors do too: when the run reads the text in
pictures (``--ocr``), each actor builds the OCR reader and reads it from the pictures it
decodes (the text travels in the item table); when the library indexes with an
accelerated image encoder (``index --runtime openvino``), the driver chooses (and, once,
builds and gates) it as a local run does, and each actor loads that build from the
library's runtime cache. An actor that cannot reach the build (another machine without
the library's folder) encodes on torch — same model, same vector space — and the run
report says so.

Very large runs can write the results as Parquet shards instead (``shards``): the workers
write them straight to a shared folder (``Dataset.write_parquet``) and the catalog ingests
them afterwards, deleting each shard once committed; shards left by an interrupted run
are ingested first on the next run.

Cluster: ``address=None`` starts a local Ray instance for the run (and stops it after);
``"auto"`` joins the cluster this machine belongs to; ``"ray://host:10001"`` connects a
Ray Client. Every node needs clipsearch installed and the files at the same paths (a
shared filesystem); each actor checks that its model has the library's fingerprint.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipsearch.errors import ClipsearchError, EngineError, MissingDependencyError, UsageError
from clipsearch.ingest.encode import EncodeLoop, LoopResult, Sink
from clipsearch.ingest.reading import TextReading
from clipsearch.ingest.runtime_choice import AcceleratedImages, RuntimeChoice, encoder_label
from clipsearch.ingest.tasks import FileTask
from clipsearch.media import MediaFile
from clipsearch.models.base import Encoder
from clipsearch.store import item_table
from clipsearch.store.texts import ReadingSettings


@dataclass(frozen=True)
class RaySettings:
    """Where and how wide a Ray indexing run goes."""

    address: str | None = None  # None: a local Ray instance for this run; "auto"; "ray://host:port"
    workers: int = 2  # encoder actors (one model each)
    cpus_per_worker: float = 1.0  # CPUs reserved per actor (its decode threads and the encoder)
    gpus_per_worker: float = 0.0  # GPUs per actor (e.g. 1, or 0.5 to pack two per GPU)
    files_per_task: int = 64  # files per block sent to an actor
    shards: Path | None = None  # write results as Parquet shards here, then ingest them
    model: Callable[[], Encoder] | None = (
        None  # builds the encoder in an actor; None: the library's
    )

    def validate(self) -> None:
        """Raise UsageError for settings Ray would reject later, after the scan."""
        if self.workers < 1 or self.files_per_task < 1:
            raise UsageError("--workers and the files per task must be at least 1")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise UsageError("CPUs per worker must be > 0 and GPUs per worker >= 0")
        if self.address not in (None, "auto") and ":" not in str(self.address):
            raise UsageError(
                f"--ray-address {self.address!r}: use auto, ray://HOST:PORT or HOST:PORT"
            )


@dataclass(frozen=True)
class ModelLoader:
    """Builds the library's model inside an actor (picklable: a spec and a precision)."""

    spec: str
    precision: str = "auto"

    def __call__(self) -> Encoder:
        from clipsearch.models import load_encoder

        return load_encoder(self.spec, precision=self.precision)


@dataclass(frozen=True)
class LoopSettings:
    """The `EncodeLoop` knobs an actor runs with (from `IndexOptions`)."""

    batch_size: int = 32
    decode_threads: int = 1
    video_sampler: str = "auto"
    max_frames: int = 512


class RayEngine:
    """An `EncodeEngine` on Ray Data. Use as a context manager (or call `close`): a local
    Ray instance started for the run is stopped there.

    model: builds the encoder in each actor (`ModelLoader` for a library's model; any
        picklable zero-argument callable).
    fingerprint: the library's model fingerprint; an actor whose model differs fails the
        run with ModelMismatchError before encoding anything.
    """

    def __init__(
        self,
        model: Callable[[], Encoder],
        fingerprint: str,
        settings: RaySettings = RaySettings(),
        loop: LoopSettings = LoopSettings(),
    ) -> None:
        settings.validate()
        self.model = model
        self.fingerprint = fingerprint
        self.settings = settings
        self.loop = loop
        self.images: AcceleratedImages | None = None  # the chosen accelerated image encoder
        self.reading: ReadingSettings | None = None  # text reading, when the run reads text
        self._encoders: dict[str, str | None] = {}  # what workers encoded with (see LoopResult)
        self._started_here = False

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the local Ray instance if this engine started it."""
        if self._started_here:
            import ray

            ray.shutdown()
            self._started_here = False

    # -- EncodeEngine -------------------------------------------------------------------------
    def use_image_encoder(self, choice: RuntimeChoice) -> None:
        """Actors load ``choice.images`` (None: they encode on torch, as chosen)."""
        self.images = choice.images

    def use_reading(self, reading: TextReading | None) -> None:
        """Actors read text with the default reader and these settings (None: no text)."""
        self.reading = None if reading is None else reading.settings

    def resume(self, sink: Sink) -> int:
        """Ingest the Parquet shards a previous run left in ``settings.shards`` (each is
        deleted once committed; an unreadable one — cut short by a crash — is deleted
        too, and its files are encoded again by this run)."""
        if self.settings.shards is None:
            return 0
        done = 0
        for path in item_table.shard_files(self.settings.shards):
            try:
                for writes in item_table.read_shard(path, encoders=self._encoders):
                    sink(writes)
                    done += len(writes)
            except item_table.DamagedShardError:
                pass  # its files are not in the catalog: this run's scan queues them again
            item_table.remove_shard(path)
        return done

    def run(
        self, tasks: Sequence[FileTask], sink: Sink, *, should_stop: Callable[[], bool]
    ) -> LoopResult:
        """Encode ``tasks`` on the cluster, handing each finished block to ``sink``."""
        result = LoopResult(image_encoders=self._encoders)
        if not tasks:
            return result
        ray = self._connect()
        ds = self._dataset(ray, tasks)
        try:
            if self.settings.shards is not None:
                self.settings.shards.mkdir(parents=True, exist_ok=True)
                ds.write_parquet(str(self.settings.shards))
                self.resume(sink)
                return result
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for label, note in item_table.image_encoders(block).items():
                    self._encoders[label] = self._encoders.get(label) or note
                sink(item_table.table_to_writes(block))
                if should_stop():
                    result.interrupted = True
                    break
        except ClipsearchError:
            raise
        except Exception as e:
            raise _engine_error(e) from e
        return result

    # -- internals ------------------------------------------------------------------------------
    def _connect(self) -> Any:
        try:
            import ray
            import ray.data
        except ImportError:
            raise MissingDependencyError("ray[data]", "ray") from None
        if ray.is_initialized():
            return ray
        # Ray's own notices (instance started, token setup) would interleave with the
        # run's progress; its errors still reach the log.
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        s = self.settings
        try:
            if s.address is None and not os.environ.get("RAY_ADDRESS"):
                # A local instance sized to the pool.
                ray.init(num_cpus=max(1, math.ceil(s.workers * s.cpus_per_worker)), **quiet)
            else:
                ray.init(address=s.address, **quiet)
        except Exception as e:
            raise EngineError(
                f"cannot start or reach the Ray cluster ({s.address or 'local'}): {e}. "
                "Check --ray-address (auto, ray://HOST:10001) and that `ray status` works."
            ) from e
        self._started_here = True
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        return ray

    def _dataset(self, ray: Any, tasks: Sequence[FileTask]) -> Any:
        """Blocks of ``files_per_task`` file records mapped over the actor pool."""
        pa = item_table.import_pyarrow()
        step = self.settings.files_per_task
        blocks = [_task_block(pa, tasks[i : i + step]) for i in range(0, len(tasks), step)]
        s = self.settings
        return ray.data.from_arrow(blocks).map_batches(
            EncodeActor,
            fn_constructor_kwargs={
                "model": self.model,
                "fingerprint": self.fingerprint,
                "loop": self.loop,
                "images": self.images,
                "reading": self.reading,
            },
            batch_size=None,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=s.workers),
            num_cpus=s.cpus_per_worker,
            num_gpus=s.gpus_per_worker or None,
            # Workers on this machine import the driver's code (the same clipsearch, and
            # whatever module the model loader lives in); other nodes use their install.
            runtime_env={"env_vars": {"PYTHONPATH": _driver_path()}},
        )


def _task_block(pa: Any, part: Sequence[FileTask]) -> Any:
    """The file records a Ray task receives (with the capture times read in this process)."""
    cols = {
        "path": [str(t.media.path) for t in part],
        "kind": [t.media.kind for t in part],
        "size": pa.array([t.media.size for t in part], pa.int64()),
        "mtime_ns": pa.array([t.media.mtime_ns for t in part], pa.int64()),
        "root_id": pa.array([t.root_id for t in part], pa.int64()),
        "content_hash": pa.array([t.content_hash for t in part], pa.string()),
        "item_id": pa.array([t.item_id for t in part], pa.int64()),  # set: read its text only
    }
    taken = [item_table.taken_values(t.taken) for t in part]
    for col, (name, kind) in enumerate(item_table.taken_fields()):
        cols[name] = pa.array([row[col] for row in taken], kind)
    return pa.table(cols)


class EncodeActor:
    """One Ray actor: a model and an `EncodeLoop`; block of file records → item table.

    images: the accelerated image encoder to load from the library's runtime cache (None:
        torch). When it cannot be loaded here, the actor encodes on torch and every row it
        returns says so (``image_encoder_note``).
    reading: the run's text-reading settings (None: no text is read).
    """

    def __init__(
        self,
        model: Callable[[], Encoder],
        fingerprint: str,
        loop: LoopSettings,
        images: AcceleratedImages | None = None,
        reading: ReadingSettings | None = None,
    ) -> None:
        from clipsearch.errors import ModelMismatchError

        encoder = model()
        if encoder.fingerprint != fingerprint:
            raise ModelMismatchError(
                f"a Ray worker loaded {encoder.spec} with fingerprint {encoder.fingerprint}, "
                f"but the library is bound to fingerprint {fingerprint}: install the same "
                "model weights (and clipsearch version) on every node"
            )
        text = None
        if reading is not None and reading.ocr:
            from clipsearch.models.ocr import text_reader

            text = TextReading(reading, text_reader())
        self.loop = EncodeLoop(
            encoder,
            batch_size=loop.batch_size,
            workers=loop.decode_threads,
            video_sampler=loop.video_sampler,
            max_frames=loop.max_frames,
            reading=text,
        )
        self.note: str | None = None
        if images is not None:
            try:
                self.loop.image_encoder = images.load(encoder)
            except ClipsearchError as e:
                self.note = (
                    f"a Ray worker could not load {images.label} ({e}): it encoded on "
                    f"{encoder_label(encoder)}; index from a machine sharing the library's "
                    "folder with the workers to use it"
                )
        self.label = encoder_label(self.loop.image_encoder)

    def __call__(self, block: Any) -> Any:
        tasks = [
            FileTask(
                media=MediaFile(Path(r["path"]), r["kind"], r["size"], r["mtime_ns"]),
                root_id=r["root_id"],
                content_hash=r["content_hash"],
                item_id=r.get("item_id"),
                taken=item_table.taken_from_row(r),  # read by the driver, stored with the rows
            )
            for r in block.to_pylist()
        ]
        done = []
        self.loop.run(tasks, done.extend)
        return item_table.writes_to_table(
            done, image_encoder=self.label, image_encoder_note=self.note
        )


def _driver_path() -> str:
    """This process's import path as a PYTHONPATH value (folders that exist)."""
    return os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))


def _engine_error(exc: BaseException) -> ClipsearchError:
    """A clipsearch error raised inside a worker, unwrapped; else an EngineError."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ClipsearchError):
            return cur
        cur = getattr(cur, "cause", None) or cur.__cause__
    return EngineError(
        f"the Ray run failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
        "Files committed so far are kept; run the same command again to resume."
    )
