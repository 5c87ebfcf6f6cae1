"""The long-lived worker the Blender add-on drives: requests, the job queue, the kept model.

`Worker` holds the state and runs the job thread; its parts live beside it: `requests` (the
request handlers, a base class of `Worker`), `tasks` (one function per task type), `jobs`
(the job record, error codes, job folders). The transports are `serve`'s.

The worker speaks the line-delimited JSON protocol of `protocol/`: one request
per line in, one event per line out. Over stdin/stdout by default (stdout
carries protocol lines only; everything else, logs included, goes to stderr),
or over TCP with `--listen HOST:PORT` (127.0.0.1 by default; any other address is
served with TLS and a token, generated when none is given, that every request carries as `"token"`).

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
* check_inputs {job: JobSpec dict} -> input_checks {report: InputCheckReport} (run in a thread of its
  own, to the asking connection only; bad_input at once for a file that cannot be used)
* free_memory -> ok (the model is dropped now, or after the current job when one runs)
* shutdown -> ok, then the worker stops the running job (resumable) and exits 0 (a served worker keeps its
  queue for the next start, cancelling nothing: `kept_queue`)
* ping -> ok (a TCP client's keep-alive: silent connections are closed after the idle timeout)
* blob_status, blob_put, list_files, fetch, fetch_files, fetch_changed: files over the connection (`transfer`)

A connection is in "paths" mode (stdio, plain loopback TCP: the worker reads and writes the
client's paths) or "transfer" mode (TLS, or a hello asking for it: inputs are uploaded blobs
named `blob:<sha>/<name>` or `blobtree:<sha>/<name>`, job folders only under the jobs root,
results fetched; `remote`). `capabilities.mode` says which. A hello with `framing: "binary"` makes
file bytes travel as raw frames after their JSON header line (`protocol.wire`, `framing`);
`capabilities.framing` says which framing the connection uses.

A shared worker (`--tokens FILE`, `identities`) knows who asks: every job has an owner, and
list_jobs, fetch, fetch_files, fetch_changed, list_files, cancel, resume and job events are scoped to it
(`sharing`; an admin sees all; another's job gets the answer a made-up one gets). Queued jobs start in turns between
owners (`quotas.FairQueue`); `queued` and `list_jobs` say each job's `position` and `others_ahead`.

Error codes (the table, with each code's meaning, is `protocol/errors.py`; which failure gets which
is `backend.errors.error_code`, as for the command line): bad_request (malformed or unknown line,
missing field), unauthorized, unknown_job, bad_input (a `backend.errors.UserError`: settings, input,
model, LoRA or job folder problems; reported before the model loads, and for missing files, LoRA
files that are none, folders that cannot take the job and invalid settings at once in reply to the
submit), out_of_memory (with a hint),
output_error (the job's folder could not be written: disk full, read-only; the model is kept
and the job resumes once that is fixed), job_failed (any other exception, first line only),
internal_error (a request the worker itself failed to answer; the worker keeps serving),
too_many_connections (TCP: sent to a connection over the limit before it is closed),
idle_timeout (TCP: an authorised connection silent for the idle timeout, before it is closed),
quota_exceeded (an artist submits past --max-queued-per-artist).
A wrong or missing token is answered `unauthorized` after a delay and the connection closed.

"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import protocol

from ..errors import UserError, error_code
from ..loaders.errors import first_line
from .jobs import (
    JOB_FAILED,
    OOM_HINT,
    OUT_OF_MEMORY,
    OUTPUT_ERROR,
    OUTPUT_HINT,
    SHUTDOWN_GRACE_S,
    Job,
    folder_summary,
    log,
)
from .blobs import DEFAULT_CAP_BYTES, BlobStore
from .identities import EVERYONE, FolderOwners, TokenBook
from .kept_queue import QUEUE_FILE, QueueKeeping, claim_jobs_root
from .quotas import DEFAULT_MAX_QUEUED, FairQueue
from .requests import Requests
from .sharing import Sharing
from .tasks import TASKS
from .transfer import Transfers

if TYPE_CHECKING:
    from .ports import EventOutput as Output


class Worker(Requests, Transfers, Sharing, QueueKeeping):
    """Job queue, model and request handling, independent of the transport."""

    def __init__(self, model: str, device: str | None, memory_args: dict, jobs_root: Path, token: str | None = None,
                 segmentation_weights: tuple[Path | None, Path | None] = (None, None),
                 blob_cap: int = DEFAULT_CAP_BYTES, tokens_file: Path | None = None,
                 max_queued_per_artist: int = DEFAULT_MAX_QUEUED, keep_queue: bool = False):
        from ..segmentation.run import Segmenters

        self.model, self.device_name, self.memory_args = model, device, memory_args
        self.segmenters = Segmenters(model == "tiny", *segmentation_weights, device=device)
        self.jobs_root = Path(jobs_root).expanduser().resolve()
        self.blobs = BlobStore(self.jobs_root / ".blobs", blob_cap)  # remote clients' uploads
        self._fetch_folders = {}  # transfer.Transfers: job folders resolved for fetches
        self.token = token or None
        self.book = TokenBook(tokens_file, self.token)  # who may ask (TokensFileError: one line, at start)
        self.owners = FolderOwners(self.jobs_root)
        self.max_queued = max_queued_per_artist
        self.components = None
        self._loaded_loras: list[tuple[str, float]] = []  # merged into the kept model's weights
        self._cond = threading.Condition()
        self._queue = FairQueue()  # round robin between owners
        self._running: Job | None = None
        self._session_dirs: set[Path] = set()
        self._free_when_idle = False
        self._outputs: list[Output] = []
        self._outputs_lock = threading.Lock()
        self._job_owners: dict[str, str] = {}  # job id -> owner: whose connections get its events
        self.stopping = threading.Event()
        self._job_thread = threading.Thread(target=self._job_loop, name="scail2-job", daemon=True)
        self._queue_file = self.jobs_root / QUEUE_FILE if keep_queue else None  # `kept_queue`: a served worker's
        self._root_claim = claim_jobs_root(self.jobs_root) if keep_queue else None  # JobsRootBusy: one line
        if self._queue_file is not None:
            self._restore_queue()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._job_thread.start()

    def close(self) -> bool:
        """Stop the running job (it stays resumable), drop the queue (a kept one waits in its file for the
        next start: its jobs are not cancelled), wait for the job thread, drop the model; False when the
        job thread did not stop in time.

        The model and the jobs' garbage are freed here, in the thread that exits: freed later
        by a daemon thread while the interpreter finalizes, a tensor aborts the process
        ("terminate called without an active exception").
        """
        self.stopping.set()
        with self._cond:
            dropped = list(self._queue)
            self._queue.clear()
            if self._running is not None:
                # A kept queue's running job runs again at the next start (one cancelled already does not).
                self._running.postponed = self._queue_file is not None and not self._running.cancel.is_set()
                self._running.cancel.set()
            self._cond.notify_all()
        for job in dropped if self._queue_file is None else ():
            self._broadcast("cancelled", job=job.id, job_dir=str(job.job_dir), was="queued")
        if self._job_thread.ident is not None:  # started
            self._job_thread.join(SHUTDOWN_GRACE_S)
        if self._job_thread.is_alive():
            log("the running job did not stop in time; exiting anyway (its finished segments are kept)")
            return False
        self._unload()
        if self._root_claim is not None:
            self._root_claim.release()
        return True

    # -- connections --------------------------------------------------------------------------
    def add_output(self, output: Output) -> None:
        output.authorised = True
        with self._outputs_lock:
            if output not in self._outputs:
                self._outputs.append(output)

    def remove_output(self, output: Output) -> None:
        with self._outputs_lock:
            if output in self._outputs:
                self._outputs.remove(output)

    def _broadcast(self, kind: str, skip: Output | None = None, **fields: Any) -> None:
        self._broadcast_line(protocol.encode_message(kind, **fields), fields.get("job"), skip)

    def _broadcast_error(self, code: str, message: str, hint: str = "", job: Job | None = None) -> None:
        self._broadcast_line(protocol.error_event(code, message, hint=hint, job=job.id if job else None),
                             job.id if job else None)

    def _broadcast_line(self, line: str, job_id: str | None = None, skip: Output | None = None) -> None:
        """`line` to every connection whose identity sees the job `job_id` (and is not revoked), but `skip`."""
        owner = self._job_owners.get(job_id) if job_id else None
        with self._outputs_lock:
            outputs = [output for output in self._outputs if output is not skip]
        for output in outputs:
            identity = getattr(output, "identity", EVERYONE)
            if owner is not None and not (identity.sees(owner) and self.book.is_current(identity)):
                continue
            if not output.send(line):
                self.remove_output(output)

    # -- the job thread -----------------------------------------------------------------------
    def _job_loop(self) -> None:
        while True:
            self._stop_revoked()  # before the next job is taken: a revoked artist's never starts
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
            else:
                gc.collect()  # the job's garbage dies in this thread, not in whichever thread collects next
            self.blobs.release(job.blobs)
            with self._cond:
                self._running = None
                self._save_queue()
                self._cond.notify_all()

    def _run_job(self, job: Job) -> tuple[str, str, str] | None:
        """Run one job, reporting its events; return (code, message, hint) if it failed with a model error.

        Whose failure it is, is `errors.error_code`'s to say, as for the command line."""
        from ..pipeline.sampler import Cancelled

        def emit(kind: str, **fields: Any) -> None:
            self._broadcast(kind, job=job.id, **fields)

        def on_event(kind: str, **fields: Any) -> None:
            # Cancellation also lands between phases, not only between denoising steps.
            if kind == "progress":
                self._stop_revoked()  # the running job's owner, and the queued jobs, between steps
                if job.cancel.is_set():
                    raise Cancelled()
                job.progress = fields  # where it stands, for list_jobs
            if kind == "done":
                job.status = "done"  # before the event: a list_jobs answered after it no longer shows the job
                fields["job_dir"] = str(job.job_dir)
            emit(kind, **fields)

        job.started_at = time.time()
        whose = f" for {job.owner}" if self.book.named and job.owner else ""
        log(f"job {job.id} ({job.task}){whose} starts in {job.job_dir}")
        try:
            TASKS[job.task](self, job, emit, on_event)
        except Cancelled:
            job.status = "cancelled"
            if job.postponed:
                log(f"job {job.id} stops with the worker; it resumes at the next start")
                return None  # not cancelled: the add-on that reconnects finds it queued again
            summary = folder_summary(job.job_dir)
            emit("cancelled", job_dir=str(job.job_dir), was="running",
                 completed_segments=summary.get("completed_segments", 0),
                 frames_written=summary.get("frames_written", 0))
            log(f"job {job.id} cancelled")
        except Exception as exc:
            job.status = "failed"
            code = error_code(exc, job.job_dir)
            if code == OUTPUT_ERROR:  # the folder, not the model: the model stays loaded for the next job
                # (an OSError: a write into the job's folder by a part that does not say so itself, the matte's)
                message = first_line(exc) if isinstance(exc, UserError) else \
                    f"cannot write {exc.filename}: {exc.strerror or exc}"
                self._broadcast_error(code, message, hint=OUTPUT_HINT, job=job)
            elif isinstance(exc, UserError):
                self._broadcast_error(code, first_line(exc), job=job)
            else:  # ours: the model is dropped
                log(f"job {job.id} failed:\n" + traceback.format_exc())
                return code, first_line(exc), OOM_HINT if code == OUT_OF_MEMORY else ""
        return None

    # -- the kept model -----------------------------------------------------------------------
    def components_for(self, emit, loras: list[tuple[str, float]]) -> Any:
        """The kept model, loaded (again) if there is none or the job merges other LoRAs."""
        if self.components is not None and self._loaded_loras != loras:
            log("the job's LoRAs differ from the loaded model's: reloading")
            self._unload()
        if self.components is not None:
            return self.components

        from ..loaders.components import load_components, model_files_read
        from ..loaders.file_hashes import hash_in_background
        from ..loaders.devices import memory_options

        device = self._device()
        memory = memory_options(self.memory_args, device)
        emit("progress", phase="load", segment=0, segments=0)
        log(f"loading model {self.model} on {device}")
        start = time.perf_counter()
        with model_files_read():
            self.components = load_components(self.model, device, memory, loras=loras)
        self._loaded_loras = list(loras)
        for line in self.components.loras:
            log(f"LoRA {line}")
        log(f"model loaded in {time.perf_counter() - start:.1f} s: {self.components.label}")
        # The recipes of the takes it makes name these files with their SHA-256 once worked out (once per file).
        hash_in_background([*self.components.files, *self.components.component_files.values()])
        return self.components

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

    def _device(self) -> str:
        from ..loaders.devices import resolve_device

        return resolve_device(self.device_name)

