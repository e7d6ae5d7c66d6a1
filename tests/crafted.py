"""A checkpoint file crafted to run code when unpickled: what anyone who can write to a shared
store's bucket could leave there."""

from __future__ import annotations

import io

import torch


class _Touch:
    """Unpickled, this would create a file: what a crafted checkpoint in a shared bucket does."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.path, "w"))


def crafted_checkpoint(marker: str) -> bytes:
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "history": [], "model": _Touch(marker)}, buffer)
    return buffer.getvalue()
