"""Files of a mounted Secret, changed the way the kubelet changes them."""

from __future__ import annotations

import os
from pathlib import Path


def replace_file(path: Path, text: str) -> None:
    """As the kubelet updates a mounted Secret: a new file renamed into place."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)
