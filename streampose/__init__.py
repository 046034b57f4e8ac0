"""streampose: real-time tracked human skeletons, PaddleX-compatible."""

from __future__ import annotations

__version__ = "0.1.0"

from streampose.errors import StreamposeError  # noqa: E402


def create_pipeline(*args, **kwargs):
    """See :func:`streampose.pipeline.create_pipeline` (imported lazily: the runtimes are heavy)."""
    from streampose.pipeline import create_pipeline as _create  # noqa: PLC0415

    return _create(*args, **kwargs)


__all__ = ["StreamposeError", "__version__", "create_pipeline"]
