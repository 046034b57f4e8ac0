"""Parse ``--device`` strings the way PaddleX users write them."""

from __future__ import annotations

from dataclasses import dataclass

from streampose.errors import DeviceError


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu" | "gpu"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"


def parse_device(text: str | None) -> Device:
    """``None``/``"cpu"`` → CPU; ``"gpu"``, ``"gpu:1"``, ``"cuda:0"`` → a GPU id."""
    if text is None or str(text).strip() == "":
        return Device("cpu")
    value = str(text).strip().lower()
    kind, _, index = value.partition(":")
    if kind == "cuda":
        kind = "gpu"
    if kind not in ("cpu", "gpu"):
        raise DeviceError(f"device {text!r}: unknown device kind (use cpu, gpu or gpu:N)")
    if "," in index:
        raise DeviceError(f"device {text!r}: several devices in one pipeline are not supported yet")
    if kind == "cpu":
        return Device("cpu")
    try:
        number = int(index) if index else 0
    except ValueError:
        raise DeviceError(f"device {text!r}: the GPU id must be an integer") from None
    if number < 0:
        raise DeviceError(f"device {text!r}: the GPU id must not be negative")
    return Device("gpu", number)
