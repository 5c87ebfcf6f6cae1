"""The long-lived worker the Blender add-on drives: requests, the job queue, the kept model.

Transport and the `serve` command live in `serve.py`.

The worker speaks the line-delimited JSON protocol of `protocol.py`: one request
per line in, one event per line out. Over stdin/stdout by default (stdout
carries protocol lines only; everything else, logs included, goes to stderr),
or over TCP with `--listen HOST:PORT` (127.0.0.1 by default; any other address
requires `--token`, and then every request must carry it as `"token"`).

Threads: one reader per connection parses requests and answers at once; a single
job thread runs the queued jobs one at a time in submission order. The model is
loaded lazily by the first job and kept until `free_memory`, a failed job, or a job
that merges other LoRAs (LoRAs are merged into the weights at load time: it reloads).
Events of jobs go to every connection that has made an authorised request.

Requests and what they produce (every reply echoes the request's `request_id`):

* hello -> capabilities
* submit {job: JobSpec dict, job_dir?} -> queued {job, job_dir, position}, then for that job
  started, progress, frame_ready, done | cancelled | error (all carrying `job`: the job id)
* cancel {job} -> cancelled {job} once the job has stopped (within one denoising step when
  running; at once when queued)
* list_jobs -> jobs {jobs: [...]}: queued, running, and unfinished job folders
* resume {job_dir} -> queued: the unfinished job of that folder, from its manifest
* free_memory -> ok (the model is dropped now, or after the current job when one runs)
* shutdown -> ok, then the worker stops the running job (resumable) and exits 0

Error codes: bad_request (malformed or unknown line, missing field), unauthorized,
unknown_job, bad_input (InputError, JobSpec, LoRA file or job folder problem; reported before
sampling, and for missing files and invalid settings at once in reply to the submit),
out_of_memory (with a hint), job_failed (any other exception, first line only),
internal_error (a request the worker itself failed to answer; the worker keeps serving).

Test hook (tests only; harmless otherwise): when the environment variable
SCAIL2_TEST_FAIL_OOM is set, a job whose prompt equals its value raises a simulated
CUDA out-of-memory error right after the model is loaded.
"""

from __future__ import annotations

import gc
import hmac
import json
import os
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import protocol

from ..loaders.errors import first_line

if TYPE_CHECKING:
    from .serve import Output

TEST_FAIL_OOM_ENV = "SCAIL2_TEST_FAIL_OOM"
OOM_HINT = "lower the resolution, use fp8 storage or group offload"
MAX_LINE_BYTES = 1 << 20  # a job spec is a few kB; anything longer is refused, not buffered
SHUTDOWN_GRACE_S = 30.0  # how long shutdown waits for the running job to stop at a step boundary

BAD_REQUEST = "bad_request"
UNAUTHORIZED = "unauthorized"
UNKNOWN_JOB = "unknown_job"
BAD_INPUT = "bad_input"
OUT_OF_MEMORY = "out_of_memory"
JOB_FAILED = "job_failed"
INTERNAL_ERROR = "internal_error"


def log(message: str) -> None:
    print(f"[scail2 worker] {message}", file=sys.stderr, flush=True)


def default_jobs_root() -> Path:
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "scail2" / "jobs"


# -- jobs ---------------------------------------------------------------------------------------


@dataclass
class Job:
    id: str
    spec: dict
    job_dir: Path
    task: str = "generate"  # protocol.TASKS
    status: str = "queued"  # queued -> running -> done | failed | cancelled
    cancel: threading.Event = field(default_factory=threading.Event)


class ProtocolFailure(Exception):
    """A request that gets an error reply: code and one line."""

    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(message)
        self.code, self.hint = code, hint


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def error_line(code: str, message: str, hint: str = "", job: str | None = None, request_id: Any = None) -> str:
    """protocol.error_event, plus the request's `request_id` when it gave one."""
    line = protocol.error_event(code, message, hint=hint, job=job)
    if request_id is None:
        return line
    return protocol.encode_message("error", **{**json.loads(line), "request_id": request_id})


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _frames_written(job_dir: Path) -> int:
    try:
        return sum(1 for p in (job_dir / "frames").iterdir() if p.name.startswith("frame_") and p.suffix == ".png")
    except OSError:
        return 0


def _spec_files(spec: protocol.JobSpec) -> list[tuple[str, str | None]]:
    files = [("driving clip", spec.driving), ("reference image", spec.reference)]
    files += [("driving mask", spec.driving_mask), ("reference image mask", spec.reference_mask)]
    files += [(f"extra reference {i + 1}", p) for i, p in enumerate(spec.extra_references)]
    files += [(f"extra reference {i + 1} mask", p) for i, p in enumerate(spec.extra_reference_masks)]
    files += [("LoRA file", lora["path"]) for lora in spec.loras]
    return files


class Worker:
    """Job queue, model and request handling, independent of the transport."""

    def __init__(self, model: str, device: str | None, memory_args: dict, jobs_root: Path, token: str | None = None,
                 segmentation_weights: tuple[Path | None, Path | None] = (None, None)):
        from ..segmentation.run import Segmenters

        self.model, self.device_name, self.memory_args = model, device, memory_args
        self.segmenters = Segmenters(model == "tiny", *segmentation_weights, device=device)
        self.jobs_root = Path(jobs_root).expanduser().resolve()
        self.token = token or None
        self.components = None
        self._loaded_loras: list[tuple[str, float]] = []  # merged into the kept model's weights
        self._cond = threading.Condition()
        self._queue: deque[Job] = deque()
        self._running: Job | None = None
        self._session_dirs: set[Path] = set()
        self._free_when_idle = False
        self._outputs: list[Output] = []
        self._outputs_lock = threading.Lock()
        self.stopping = threading.Event()
        self._job_thread = threading.Thread(target=self._job_loop, name="scail2-job", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._job_thread.start()

    def close(self) -> None:
        """Stop the running job (it stays resumable), drop the queue, wait for the job thread."""
        self.stopping.set()
        with self._cond:
            dropped = list(self._queue)
            self._queue.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify_all()
        for job in dropped:
            self._broadcast("cancelled", job=job.id, job_dir=str(job.job_dir), was="queued")
        self._job_thread.join(SHUTDOWN_GRACE_S)
        if self._job_thread.is_alive():
            log("the running job did not stop in time; exiting anyway (its finished segments are kept)")

    # -- connections --------------------------------------------------------------------------
    def add_output(self, output: Output) -> None:
        with self._outputs_lock:
            if output not in self._outputs:
                self._outputs.append(output)

    def remove_output(self, output: Output) -> None:
        with self._outputs_lock:
            if output in self._outputs:
                self._outputs.remove(output)

    def _broadcast(self, kind: str, **fields: Any) -> None:
        self._broadcast_line(protocol.encode_message(kind, **fields))

    def _broadcast_error(self, code: str, message: str, hint: str = "", job: Job | None = None) -> None:
        self._broadcast_line(protocol.error_event(code, message, hint=hint, job=job.id if job else None))

    def _broadcast_line(self, line: str) -> None:
        with self._outputs_lock:
            outputs = list(self._outputs)
        for output in outputs:
            if not output.send(line):
                self.remove_output(output)

    # -- requests -----------------------------------------------------------------------------
    def handle_line(self, raw: bytes | str | None, output: Output) -> None:
        """Answer one request line on `output`. Never raises."""
        request_id = None
        try:
            if raw is None:
                raise ProtocolFailure(BAD_REQUEST, f"line longer than {MAX_LINE_BYTES} bytes refused")
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", errors="replace")
            if not raw.strip():
                return
            try:
                message = protocol.decode_message(raw)
            except protocol.ProtocolError as exc:
                raise ProtocolFailure(BAD_REQUEST, str(exc)) from None
            request_id = message.get("request_id")
            if self.token is not None:
                given = message.get("token")
                if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.token.encode()):
                    raise ProtocolFailure(UNAUTHORIZED, "unauthorized")
            kind = message["type"]
            if kind not in protocol.REQUESTS:
                raise ProtocolFailure(BAD_REQUEST, f"{kind!r} is an event, not a request")
            reply = getattr(self, f"_on_{kind}")(message)
            if reply is not None:
                kind_out, fields = reply
                if request_id is not None:
                    fields["request_id"] = request_id
                output.send(protocol.encode_message(kind_out, **fields))
            # Job events reach a connection only after it has made an authorised request.
            self.add_output(output)
        except ProtocolFailure as exc:
            output.send(error_line(exc.code, str(exc), exc.hint, request_id=request_id))
        except Exception as exc:  # a bug must not take the worker down
            log("request failed:\n" + traceback.format_exc())
            output.send(error_line(INTERNAL_ERROR, f"request failed: {first_line(exc)}", request_id=request_id))

    def _on_hello(self, message: dict) -> tuple[str, dict]:
        from .. import __version__
        from ..doctor import attention_backends, cuda_info

        cuda = cuda_info(self.device_name)
        model = {
            "name": self.model,
            "loaded": self.components is not None,
            "noise_only": self.model == "tiny",
            "label": self.components.label if self.components is not None else self._model_label(),
            "loras": list(self.components.loras) if self.components is not None else [],
        }
        import platform

        import torch

        return "capabilities", dict(
            protocol=protocol.PROTOCOL_VERSION, backend=__version__, python=platform.python_version(),
            torch=torch.__version__, cuda=cuda, device=self._device(), model=model,
            attention_backends=attention_backends(cuda["available"]), requests=list(protocol.REQUESTS),
            jobs_root=str(self.jobs_root), pid=os.getpid(),
        )

    def _on_submit(self, message: dict) -> tuple[str, dict]:
        if not isinstance(message.get("job"), dict):
            raise ProtocolFailure(BAD_REQUEST, "submit needs 'job': a job specification object")
        job_dir = message.get("job_dir")
        if job_dir is not None and (not isinstance(job_dir, str) or not job_dir.strip()):
            raise ProtocolFailure(BAD_REQUEST, "'job_dir' must be a folder path")
        task = message.get("task", "generate")
        spec = self._check_spec(message["job"]) if task == "generate" else self._check_segment_spec(message)
        job_id = uuid.uuid4().hex[:12]
        folder = Path(job_dir).expanduser() if job_dir else self.jobs_root / job_id
        return self._enqueue(Job(job_id, spec.to_dict(), folder.resolve(), task=task))

    def _on_resume(self, message: dict) -> tuple[str, dict]:
        job_dir = message.get("job_dir")
        if not isinstance(job_dir, str) or not job_dir.strip():
            raise ProtocolFailure(BAD_REQUEST, "resume needs 'job_dir': the folder of the job")
        folder = Path(job_dir).expanduser().resolve()
        manifest = _read_json(folder / "manifest.json")
        if manifest is None or not isinstance(manifest.get("job"), dict):
            raise ProtocolFailure(BAD_REQUEST, f"no readable manifest.json in {folder}: nothing to resume")
        state = _read_json(folder / "state.json") or {}
        if state.get("status") == "done":
            raise ProtocolFailure(BAD_REQUEST, f"the job in {folder} is already finished")
        spec = self._check_spec(manifest["job"])
        return self._enqueue(Job(uuid.uuid4().hex[:12], spec.to_dict(), folder))

    def _on_cancel(self, message: dict) -> None:
        job_id = message.get("job")
        with self._cond:
            if self._running is not None and self._running.id == job_id:
                self._running.cancel.set()
                return None  # the job thread reports `cancelled` once the job has stopped
            for job in self._queue:
                if job.id == job_id:
                    self._queue.remove(job)
                    job.status = "cancelled"
                    break
            else:
                raise ProtocolFailure(UNKNOWN_JOB, f"no queued or running job {job_id!r}")
        self._broadcast("cancelled", job=job.id, job_dir=str(job.job_dir), was="queued")
        return None

    def _on_list_jobs(self, message: dict) -> tuple[str, dict]:
        jobs = []
        with self._cond:
            active = self._active_jobs()
            session_dirs = set(self._session_dirs)
        for position, job in enumerate(active):
            entry = {"job": job.id, "job_dir": str(job.job_dir), "status": job.status}
            if job.status == "queued":
                entry["position"] = position  # jobs ahead of it
            jobs.append(self._folder_summary(job.job_dir) | entry)
        busy = {job.job_dir for job in active}
        candidates = set(session_dirs)
        try:
            candidates |= {p.resolve() for p in self.jobs_root.iterdir() if p.is_dir()}
        except OSError:
            pass
        for folder in sorted(candidates - busy):
            summary = self._folder_summary(folder)
            if summary and summary.get("state") != "done":
                jobs.append({"job": None, "job_dir": str(folder), "status": "unfinished"} | summary)
        return "jobs", {"jobs": jobs}

    def _on_free_memory(self, message: dict) -> tuple[str, dict]:
        with self._cond:  # held while unloading, so no job can start meanwhile
            if self._running is not None and self._running.status != "running":
                # A job that has reported its end is returning: wait for it to let go of the model.
                self._cond.wait_for(lambda: self._running is None, timeout=10.0)
            busy = self._running is not None or bool(self._queue)
            if busy:
                self._free_when_idle = True
            else:
                self._unload()
        return "ok", {"request": "free_memory", "freed": not busy, "deferred": busy}

    def _on_shutdown(self, message: dict) -> tuple[str, dict]:
        self.stopping.set()
        return "ok", {"request": "shutdown"}

    # -- request helpers ----------------------------------------------------------------------
    def _check_spec(self, data: dict) -> protocol.JobSpec:
        """The cheap checks, answered at once: settings, and that every named file exists."""
        try:
            spec = protocol.JobSpec.from_dict(data)
        except protocol.ProtocolError as exc:
            raise ProtocolFailure(BAD_INPUT, str(exc)) from None
        if not all(isinstance(lora, dict) and isinstance(lora.get("path"), str) for lora in spec.loras):
            raise ProtocolFailure(BAD_INPUT, 'each LoRA must be {"path": FILE, "strength": NUMBER}')
        for what, path in _spec_files(spec):
            if path is not None and (not isinstance(path, str) or not Path(path).exists()):
                raise ProtocolFailure(BAD_INPUT, f"{what} not found: {path}")
        if spec.matte:
            self._check_segmenters(marks=False)
        return spec

    def _check_segment_spec(self, message: dict) -> protocol.SegmentSpec:
        """A masks or matte job: its settings, its source, and the weights it needs, answered at once."""
        try:
            spec = protocol.spec_from_submit(message)
        except protocol.ProtocolError as exc:
            raise ProtocolFailure(BAD_INPUT, str(exc)) from None
        if not Path(spec.source).exists() and "%" not in spec.source:
            raise ProtocolFailure(BAD_INPUT, f"{'image' if spec.still else 'clip'} not found: {spec.source}")
        self._check_segmenters(marks=bool(spec.subjects))
        return spec

    def _check_segmenters(self, marks: bool) -> None:
        from ..segmentation import SegmentationError

        try:
            self.segmenters.check(marks=marks)
        except SegmentationError as exc:
            raise ProtocolFailure(BAD_INPUT, str(exc)) from None

    def _enqueue(self, job: Job) -> tuple[str, dict]:
        manifest = _read_json(job.job_dir / "manifest.json")
        if manifest is not None and manifest.get("job") != job.spec:
            raise ProtocolFailure(BAD_INPUT, f"{job.job_dir} holds a different job; choose another output folder")
        with self._cond:
            if self.stopping.is_set():
                raise ProtocolFailure(BAD_REQUEST, "the worker is shutting down")
            active = self._active_jobs()
            if any(other.job_dir == job.job_dir for other in active):
                raise ProtocolFailure(BAD_REQUEST, f"a job for {job.job_dir} is already queued or running")
            position = len(active)  # jobs ahead of this one
            self._queue.append(job)
            self._session_dirs.add(job.job_dir)
            self._cond.notify_all()
        return "queued", {"job": job.id, "job_dir": str(job.job_dir), "position": position}

    def _active_jobs(self) -> list[Job]:
        """The running job, then the queue (a job that has just ended no longer counts). Hold _cond."""
        return [job for job in [self._running, *self._queue] if job and job.status in ("queued", "running")]

    @staticmethod
    def _folder_summary(folder: Path) -> dict:
        """What a job folder says about itself ({} when it holds no job)."""
        manifest = _read_json(folder / "manifest.json")
        if manifest is None:
            return {}
        state = _read_json(folder / "state.json") or {}
        return {
            "state": state.get("status", manifest.get("status")),
            "completed_segments": int(state.get("completed_segments", 0)),
            "segments": len(manifest.get("segments", [])),
            "frames": len(manifest.get("frames", [])),
            "frames_written": _frames_written(folder),
        }

    def _model_label(self) -> str:
        if self.model == "tiny":
            from ..models.tiny import TINY_LABEL

            return TINY_LABEL
        return f"SCAIL-2 weights in {self.model} (not loaded yet)"

    def _device(self) -> str:
        from ..loaders.devices import resolve_device

        return resolve_device(self.device_name)

    # -- the job thread -----------------------------------------------------------------------
    def _job_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self.stopping.is_set():
                    if self._free_when_idle:
                        self._free_when_idle = False
                        self._unload()
                    self._cond.wait()
                if self.stopping.is_set():
                    return
                job = self._queue.popleft()
                job.status = "running"
                self._running = job
            failure = None
            try:
                failure = self._run_job(job)
            except BaseException as exc:  # never lose the job thread
                log("job thread error:\n" + traceback.format_exc())
                job.status = "failed"
                failure = (JOB_FAILED, first_line(exc), "")
            if failure is not None:
                # The job's frame is gone, so nothing holds its tensors or the model any more.
                self._unload()
                code, message, hint = failure
                self._broadcast_error(code, message, hint=hint, job=job)
            with self._cond:
                self._running = None
                self._cond.notify_all()

    def _run_job(self, job: Job) -> tuple[str, str, str] | None:
        """Run one job, reporting its events; return (code, message, hint) if it failed with a model error."""
        from ..pipeline.generate import GenerationJob, JobDirectoryError
        from ..pipeline.inputs import InputError, prepare_inputs
        from ..loaders.lora import LoraError, lora_specs
        from ..pipeline.media import MediaError
        from ..pipeline.sampler import Cancelled
        from ..segmentation import SegmentationError

        def emit(kind: str, **fields: Any) -> None:
            self._broadcast(kind, job=job.id, **fields)

        def on_event(kind: str, **fields: Any) -> None:
            # Cancellation also lands between phases, not only between denoising steps.
            if kind == "progress" and job.cancel.is_set():
                raise Cancelled()
            if kind == "done":
                job.status = "done"  # before the event: a list_jobs answered after it no longer shows the job
                fields["job_dir"] = str(job.job_dir)
            emit(kind, **fields)

        log(f"job {job.id} ({job.task}) starts in {job.job_dir}")
        try:
            if job.task != "generate":
                self._run_segment_job(job, on_event)
                return None
            try:
                spec = protocol.JobSpec.from_dict(job.spec)
            except protocol.ProtocolError as exc:
                raise InputError(str(exc)) from None
            inputs = prepare_inputs(spec)
            if job.cancel.is_set():
                raise Cancelled()
            components = self._load_components(emit, lora_specs(spec.loras))
            self._test_hook_out_of_memory(spec)
            generation = GenerationJob(inputs, components, job.job_dir, events=on_event, segmenters=self.segmenters)
            generation.check_resumable()
            emit("started", job_dir=str(job.job_dir), frames=len(inputs.frame_times),
                 segments=len(generation.segments),
                 completed_segments=int(generation.state.get("completed_segments", 0)),
                 size=[inputs.height, inputs.width], noise_only=components.noise_only, warnings=inputs.warnings)
            generation.run(should_cancel=job.cancel.is_set)
            job.status = "done"
            log(f"job {job.id} done")
        except Cancelled:
            job.status = "cancelled"
            summary = self._folder_summary(job.job_dir)
            emit("cancelled", job_dir=str(job.job_dir), was="running",
                 completed_segments=summary.get("completed_segments", 0),
                 frames_written=summary.get("frames_written", 0))
            log(f"job {job.id} cancelled")
        except (InputError, JobDirectoryError, LoraError, SegmentationError, MediaError) as exc:
            job.status = "failed"
            self._broadcast_error(BAD_INPUT, first_line(exc), job=job)
        except Exception as exc:
            job.status = "failed"
            log(f"job {job.id} failed:\n" + traceback.format_exc())
            if is_out_of_memory(exc):
                return OUT_OF_MEMORY, first_line(exc), OOM_HINT
            return JOB_FAILED, first_line(exc), ""
        return None

    def _run_segment_job(self, job: Job, on_event) -> None:
        """A masks or matte job; its events mirror a generation's (started, progress, done)."""
        from ..segmentation.run import run_segment_job

        spec = protocol.SegmentSpec.from_dict(job.spec)
        record = run_segment_job(spec, job.job_dir, self.segmenters, events=on_event, should_cancel=job.cancel.is_set)
        job.status = "done"
        on_event("done", task=job.task, frames=record["frame_count"], identities=record["identities"],
                 warnings=record["warnings"], record=str(job.job_dir / protocol.SEGMENT_RECORD))
        log(f"job {job.id} done")

    def _load_components(self, emit, loras: list[tuple[str, float]]) -> Any:
        """The kept model, loaded (again) if there is none or the job merges other LoRAs."""
        if self.components is not None and self._loaded_loras != loras:
            log("the job's LoRAs differ from the loaded model's: reloading")
            self._unload()
        if self.components is not None:
            return self.components

        from ..loaders.components import load_components
        from ..loaders.devices import memory_options

        device = self._device()
        memory = memory_options(self.memory_args, device)
        emit("progress", phase="load", segment=0, segments=0)
        log(f"loading model {self.model} on {device}")
        start = time.perf_counter()
        self.components = load_components(self.model, device, memory, loras=loras)
        self._loaded_loras = list(loras)
        for line in self.components.loras:
            log(f"LoRA {line}")
        log(f"model loaded in {time.perf_counter() - start:.1f} s: {self.components.label}")
        return self.components

    @staticmethod
    def _test_hook_out_of_memory(spec: protocol.JobSpec) -> None:
        trigger = os.environ.get(TEST_FAIL_OOM_ENV)
        if trigger and spec.prompt == trigger:
            import torch

            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 20.00 GiB (simulated by {TEST_FAIL_OOM_ENV})"
            )

    def _unload(self) -> None:
        """Drop the models and return cached accelerator memory."""
        self.components = None
        self.segmenters.unload()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


# -- serving ------------------------------------------------------------------------------------
