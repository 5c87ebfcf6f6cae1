"""Answering the worker's requests: `handle_line` and one `_on_<request>` method per request type.

`Requests` is a part of `worker.Worker` (its base class): the handlers read and change the
worker's queue and model under its lock (`_cond`), and call its `_unload` and `_device`.
Submits are checked here, cheaply and at once (settings, files, LoRA headers, the job folder,
segmentation weights), so a bad job is refused before it is queued.
"""

from __future__ import annotations

import os
import threading
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import protocol

from ..loaders.errors import first_line
from .jobs import (
    BAD_INPUT,
    BAD_REQUEST,
    INTERNAL_ERROR,
    MAX_LINE_BYTES,
    UNAUTHORIZED,
    UNKNOWN_JOB,
    Job,
    ProtocolFailure,
    error_line,
    folder_summary,
    is_finished,
    log,
    read_json,
)
from .framing import negotiate_framing, send_reply
from .remote import remote_job_folder, resolve_inputs
from .sharing import identity_of

if TYPE_CHECKING:
    from .ports import EventOutput as Output


class Requests:
    """The request handlers of `worker.Worker`."""

    def handle_line(self, raw: bytes | str | None, output: Output, payload: bytes | None = None) -> None:
        """Answer one request line on `output` (`payload`: the raw bytes of a binary frame). Never raises."""
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
                request_id = protocol.request_id_of(raw)  # an unknown type's refusal echoes it too
                raise ProtocolFailure(BAD_REQUEST, str(exc)) from None
            request_id = message.get("request_id")
            identity = self.book.identify(message.get("token"))  # checked on every request: revoked is refused
            if identity is None:
                raise ProtocolFailure(UNAUTHORIZED, "unauthorized: wrong, revoked or missing token; connection closed")
            if self.book.named and identity != getattr(output, "identity", None):  # who is behind it, for the log
                log(f"{getattr(output, 'name', 'a client')} is {identity.name or 'the unnamed --token identity'}"
                    + (" (admin)" if identity.admin else ""))
            output.identity = identity
            kind = message["type"]
            if kind not in protocol.REQUESTS:
                raise ProtocolFailure(BAD_REQUEST, f"{kind!r} is an event, not a request")
            if payload is not None:
                message = dict(message, **{protocol.PAYLOAD_FIELD: payload})
            reply = getattr(self, f"_on_{kind}")(message, output)
            if reply is not None:
                kind_out, fields = reply
                if request_id is not None:
                    fields["request_id"] = request_id
                send_reply(output, kind_out, fields)
            # Job events reach a connection only after it has made an authorised request.
            self.add_output(output)
        except ProtocolFailure as exc:
            refused = exc.code == UNAUTHORIZED and getattr(output, "on_auth_failure", None) is not None
            if refused:
                output.on_auth_failure()  # slowed down, counted for the address
            output.send(error_line(exc.code, str(exc), exc.hint, request_id=request_id))
            if refused:
                output.closing = True
        except Exception as exc:  # a bug must not take the worker down
            log("request failed:\n" + traceback.format_exc())
            output.send(error_line(INTERNAL_ERROR, f"request failed: {first_line(exc)}", request_id=request_id))

    def _on_hello(self, message: dict, output: Output) -> tuple[str, dict]:
        from .. import __version__
        from ..models.attention_choice import known_attention_backends
        from ..tools.doctor import cuda_info

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
            # None until worked out: the first hello never waits for diffusers' import (run_serve warms it)
            attention_backends=known_attention_backends(cuda["available"]), requests=list(protocol.REQUESTS),
            jobs_root=str(self.jobs_root), pid=os.getpid(), mode=self._connection_mode(message, output),
            **negotiate_framing(message, output),
            identity=identity_of(output).name, admin=identity_of(output).admin, shared=self.book.named,
            unnamed_uploads=True,
        )

    @staticmethod
    def _connection_mode(message: dict, output: Output) -> str:
        """A TLS connection is in transfer mode; a plain (loopback) one may ask for it."""
        if message.get("mode") == "transfer" and hasattr(output, "mode"):
            output.mode = "transfer"
        return getattr(output, "mode", "paths")

    def _on_ping(self, message: dict, output: Output) -> tuple[str, dict]:
        return "ok", {"request": "ping"}

    def _on_submit(self, message: dict, output: Output) -> tuple[str, dict]:
        if not isinstance(message.get("job"), dict):
            raise ProtocolFailure(BAD_REQUEST, "submit needs 'job': a job specification object")
        job_dir = message.get("job_dir")
        if job_dir is not None and (not isinstance(job_dir, str) or not job_dir.strip()):
            raise ProtocolFailure(BAD_REQUEST, "'job_dir' must be a folder path")
        task = message.get("task", "generate")
        job_id = uuid.uuid4().hex[:12]
        held: list[str] = []
        if output.mode == "transfer":  # checked before any path is looked at
            folder = remote_job_folder(self.jobs_root, job_dir, job_id)
            job, held = resolve_inputs(task, message["job"], self.blobs, identity_of(output))
            message = dict(message, job=job)
        else:
            folder = Path(job_dir).expanduser() if job_dir else self.jobs_root / job_id
        spec = self._check_spec(message["job"]) if task == "generate" else self._check_segment_spec(message)
        job = Job(job_id, spec.to_dict(), folder.resolve(), task=task, blobs=tuple(held))
        return self._enqueue(self._owned(job, output), output)

    def _on_check_inputs(self, message: dict, output: Output) -> None:
        """Check a job's inputs without queueing it: the cheap file checks answered at once (an error),
        the checklist in a thread of its own, so pings, submits and cancels are answered meanwhile; its
        `input_checks` event (or error) goes to this connection only."""
        try:
            request = protocol.CheckInputsRequest.from_dict({"job": message.get("job"),
                                                             "request_id": message.get("request_id")})
        except protocol.ProtocolError as exc:
            raise ProtocolFailure(BAD_REQUEST, str(exc)) from None
        job = request.job
        if output.mode == "transfer":  # uploaded blobs, as a submit names them
            job, _held = resolve_inputs("generate", job, self.blobs, identity_of(output))
        spec = self._check_spec(job)

        def run() -> None:
            from ..input_checks.run import check_inputs
            from ..pipeline.inputs import InputError

            try:
                report = check_inputs(spec)
                event = protocol.InputChecksEvent(report=report, request_id=request.request_id)
                line = protocol.encode_event(event)
            except InputError as exc:
                line = error_line(BAD_INPUT, first_line(exc), request_id=request.request_id)
            except Exception as exc:  # a bug must not take the worker down
                log("input checks failed:\n" + traceback.format_exc())
                line = error_line(INTERNAL_ERROR, f"input checks failed: {first_line(exc)}",
                                  request_id=request.request_id)
            output.send(line)

        threading.Thread(target=run, name="scail2-check-inputs", daemon=True).start()
        return None

    def _on_resume(self, message: dict, output: Output) -> tuple[str, dict]:
        job_dir = message.get("job_dir")
        if not isinstance(job_dir, str) or not job_dir.strip():
            raise ProtocolFailure(BAD_REQUEST, "resume needs 'job_dir': the folder of the job")
        if output.mode == "transfer":
            folder = remote_job_folder(self.jobs_root, job_dir, "")
        else:
            folder = Path(job_dir).expanduser().resolve()
        manifest = read_json(folder / protocol.MANIFEST_NAME) if self._sees_folder(folder, output) else None
        if manifest is None or not isinstance(manifest.get("job"), dict):
            raise ProtocolFailure(BAD_REQUEST, f"no readable manifest.json in {folder}: nothing to resume")
        summary = folder_summary(folder)
        if is_finished(summary):
            raise ProtocolFailure(BAD_REQUEST, f"the job in {folder} is already finished")
        spec = self._check_spec(manifest["job"])
        kind, reply = self._enqueue(self._owned(Job(uuid.uuid4().hex[:12], spec.to_dict(), folder), output), output)
        return kind, reply | {"was": summary.get("state")}  # "interrupted": its last run was killed

    def _on_cancel(self, message: dict, output: Output) -> None:
        job_id = message.get("job")
        with self._cond:
            running = self._running
            if running is not None and running.id == job_id and self._sees_job(running, output):
                running.cancel.set()
                self._save_queue()
                return None  # the job thread reports `cancelled` once the job has stopped
            for job in self._queue:
                if job.id == job_id and self._sees_job(job, output):
                    self._queue.remove(job)
                    job.status = "cancelled"
                    self.blobs.release(job.blobs)
                    self._save_queue()
                    break
            else:
                raise ProtocolFailure(UNKNOWN_JOB, f"no queued or running job {job_id!r}")
        self._broadcast("cancelled", job=job.id, job_dir=str(job.job_dir), was="queued")
        return None

    def _on_list_jobs(self, message: dict, output: Output) -> tuple[str, dict]:
        jobs = []
        with self._cond:
            active = self._active_jobs()
            session_dirs = set(self._session_dirs)
        for position, job in enumerate(active):
            if not self._sees_job(job, output):
                continue
            entry = {"job": job.id, "job_dir": str(job.job_dir), "status": job.status, "owner": job.owner}
            if job.status == "queued":
                entry["position"] = position  # jobs ahead of it (in the fair order: the order they start)
                entry["others_ahead"] = self._others_ahead(active, job)
            elif job.started_at is not None:  # running: since when, and its last progress event's fields
                entry["started_at"], entry["progress"] = job.started_at, dict(job.progress)
            jobs.append(folder_summary(job.job_dir) | entry)
        busy = {job.job_dir for job in active}
        candidates = set(session_dirs)
        try:
            candidates |= {p.resolve() for p in self.jobs_root.iterdir() if p.is_dir()}
        except OSError:
            pass
        for folder in sorted(candidates - busy):
            if not self._sees_folder(folder, output):
                continue
            summary = folder_summary(folder)
            if summary and not is_finished(summary):
                jobs.append({"job": None, "job_dir": str(folder), "status": "unfinished"} | summary)
        return "jobs", {"jobs": jobs}

    def _on_free_memory(self, message: dict, output: Output) -> tuple[str, dict]:
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

    def _on_shutdown(self, message: dict, output: Output) -> tuple[str, dict]:
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
        from ..pipeline.inputs import InputError, check_input_files

        try:
            check_input_files(spec)  # every input there (patterns too) and within the pixel limit, from headers
        except InputError as exc:
            raise ProtocolFailure(BAD_INPUT, first_line(exc)) from None
        self._check_loras(spec)
        if spec.matte:
            self._check_segmenters(marks=False)
        return spec

    def _check_segment_spec(self, message: dict) -> protocol.SegmentSpec:
        """A masks or matte job: its settings, its source, and the weights it needs, answered at once."""
        try:
            spec = protocol.spec_from_submit(message)
        except protocol.ProtocolError as exc:
            raise ProtocolFailure(BAD_INPUT, str(exc)) from None
        source = Path(spec.source)
        if not (source.is_file() or source.is_dir()) and "%" not in spec.source:  # a FIFO is refused here too
            raise ProtocolFailure(BAD_INPUT, f"{'image' if spec.still else 'clip'} not found: {spec.source}")
        self._check_segmenters(marks=bool(spec.subjects))
        return spec

    @staticmethod
    def _check_loras(spec: protocol.JobSpec) -> None:
        """Each LoRA file readable and a LoRA, from its header (the model is loaded only after)."""
        from ..loaders.lora import LoraError, lora_specs
        from ..pipeline.preflight import check_lora_files

        try:
            check_lora_files(lora_specs(spec.loras))
        except LoraError as exc:
            raise ProtocolFailure(BAD_INPUT, first_line(exc)) from None

    def _check_segmenters(self, marks: bool) -> None:
        from ..segmentation import SegmentationError

        try:
            self.segmenters.check(marks=marks)
        except SegmentationError as exc:
            raise ProtocolFailure(BAD_INPUT, str(exc)) from None

    def _enqueue(self, job: Job, output: Output) -> tuple[str, dict]:
        """Queue `job`; the reply to `output` (who asked). Whoever else sees the job (the artist's other sessions, an
        admin) is told it joined the queue, so a list of the worker's jobs shown there can follow."""
        if job.task == "generate":
            self._check_folder(job)
        with self._cond:
            if self.stopping.is_set():
                raise ProtocolFailure(BAD_REQUEST, "the worker is shutting down")
            active = self._active_jobs()
            if any(other.job_dir == job.job_dir for other in active):
                raise ProtocolFailure(BAD_REQUEST, f"a job for {job.job_dir} is already queued or running")
            self._queue.append(job)
            self._claimed(job)
            active = self._active_jobs()
            position = active.index(job)  # jobs that start before this one (the fair order)
            others_ahead = self._others_ahead(active, job)
            self.blobs.hold(job.blobs)  # released by the job thread when it ends, or by a cancel while queued
            self._session_dirs.add(job.job_dir)
            self._save_queue()
            self._cond.notify_all()
        fields = {"job": job.id, "job_dir": str(job.job_dir), "position": position, "others_ahead": others_ahead}
        self._broadcast("queued", skip=output, **fields)
        return "queued", fields

    @staticmethod
    def _check_folder(job: Job) -> None:
        """The folder takes this job (empty, new, or holding it) and no other live process writes it."""
        from ..pipeline.job_folder import JobDirectoryError, check_folder, live_holder

        try:
            check_folder(job.job_dir, job.spec)
        except JobDirectoryError as exc:
            raise ProtocolFailure(BAD_INPUT, first_line(exc)) from None
        holder = live_holder(job.job_dir)
        if holder is not None and holder != os.getpid():
            raise ProtocolFailure(BAD_INPUT, f"{job.job_dir} is being written by another run (PID {holder}); wait "
                                  "for it to end or cancel it")

    def _active_jobs(self) -> list[Job]:
        """The running job, then the queue (a job that has just ended no longer counts). Hold _cond."""
        return [job for job in [self._running, *self._queue] if job and job.status in ("queued", "running")]

    def _model_label(self) -> str:
        if self.model == "tiny":
            from ..models.labels import TINY_LABEL  # the profile's label without importing its networks

            return TINY_LABEL
        return f"SCAIL-2 weights in {self.model} (not loaded yet)"

