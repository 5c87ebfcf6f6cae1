"""The narrow faces the worker's parts see of each other, as typing Protocols (no imports between them).

A transport (`serve`, `connection`) needs a `LineHandler`: something to hand request lines to,
outputs to register, and a stop flag. The request handlers and the job thread need an
`EventOutput`: one connection's event stream. A task function (`tasks`) needs a `ModelHost`:
the kept model and the segmenters. `worker.Worker` is all three's other side, but none of these
modules imports it, so the package's modules form no circle, not even for type checking.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol


class EventOutput(Protocol):
    """One connection's event stream (`serve.Output`, `connection.QueuedOutput`)."""

    name: str
    mode: str  # protocol.CONNECTION_MODES
    authorised: bool
    closing: bool

    def send(self, line: str) -> bool: ...


class LineHandler(Protocol):
    """What a transport needs of the worker."""

    stopping: threading.Event
    token: str | None

    def handle_line(self, raw: bytes | str | None, output: EventOutput) -> None: ...

    def add_output(self, output: EventOutput) -> None: ...

    def remove_output(self, output: EventOutput) -> None: ...

    def start(self) -> None: ...

    def close(self) -> bool: ...


class ModelHost(Protocol):
    """What a task function needs of the worker: the kept model (loaded for the job's LoRAs) and the segmenters."""

    segmenters: Any

    def components_for(self, emit: Callable[..., None], loras: list[tuple[str, float]]) -> Any: ...
