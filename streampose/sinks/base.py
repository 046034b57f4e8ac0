"""What file sinks share: finish on success or Ctrl-C, delete the partial file on failure."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TypeVar

Self = TypeVar("Self", bound="AtomicOutput")


class AtomicOutput:
    """A writer that works on a partial file and renames it into place on :meth:`close`.

    ``with`` closes normally on success and on KeyboardInterrupt (a valid shorter file is what a
    user who pressed Ctrl-C wants) and aborts on any other exception (a failed run must not leave
    an output that looks complete). Subclasses implement ``close`` and ``_abort_locked``.
    """

    _lock: threading.Lock

    def close(self) -> None:
        raise NotImplementedError

    def _abort_locked(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Stop writing and delete the partial file; the final name is never created."""
        with self._lock:
            self._abort_locked()

    def __enter__(self: Self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.abort()
