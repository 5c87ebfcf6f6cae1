"""How a long command stops on a signal: at its next check, so what it wrote stays resumable.

`generate` and `download` share it; it lives below the command line so neither reaches back up to `cli`.
"""

from __future__ import annotations

import signal


class StopSignals:
    """SIGTERM, SIGINT and SIGHUP stop a running generation at its next check (between denoising steps,
    VAE chunks and frames), so state.json says "cancelled" and the same command resumes it; a second
    signal ends the process at once (the folder's lock then tells the next run it was killed)."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))

    def __init__(self):
        self.signum = 0
        self._previous = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def requested(self) -> bool:
        return self.signum != 0

    def _handle(self, signum, _frame) -> None:
        if self.signum:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signum = signum  # a plain attribute: the handler takes no lock the sampler might hold

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *_exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
