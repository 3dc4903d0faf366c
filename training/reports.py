"""Held-out figures from the command lines: printed as JSON, and written to a file when asked."""

from __future__ import annotations

import json
from pathlib import Path


def print_and_write(metrics: dict, out: Path | None) -> None:
    text = json.dumps(metrics, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
