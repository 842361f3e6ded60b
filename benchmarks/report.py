"""The end of every benchmark: its JSON report printed, and written to `--json FILE` when given."""
from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, json_path: str | None) -> dict:
    text = json.dumps(report, indent=1)
    print(text)
    if json_path:
        Path(json_path).write_text(text)
    return report
