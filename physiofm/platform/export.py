"""Clean exports of trained encoders: one self-describing file per encoder, no DeepSpeed inside.

CBraMod encoders are written with `CBraMod.save_pretrained` (so `CBraMod.from_pretrained` loads
them); other encoders as {format, class, config, state_dict}. Every file loads with
`torch.load(..., weights_only=True)`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

MODULE_FORMAT = "physiofm.module.v1"


def export_encoders(objective: nn.Module, directory: str | Path) -> dict[str, Path]:
    """Write each of `objective.encoders()` to `directory/<name>.pt` (full fp32 weights)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, module in objective.encoders().items():
        path = directory / f"{name}.pt"
        if hasattr(module, "save_pretrained"):
            module.save_pretrained(path)
        else:
            config = getattr(module, "config", None)
            torch.save({
                "format": MODULE_FORMAT,
                "class": f"{type(module).__module__}.{type(module).__qualname__}",
                "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {},
                "state_dict": {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                               for k, v in module.state_dict().items()},
            }, path)
        written[name] = path
    return written
