"""Clean exports of trained encoders: one self-describing file per encoder, no DeepSpeed inside.

CBraMod encoders are written with `CBraMod.save_pretrained` (so `CBraMod.from_pretrained` loads
them); other encoders as {format, class, config_class, config, state_dict}. Every file loads with
`torch.load(..., weights_only=True)`, and `load_encoder(path)` rebuilds any of them.
"""
from __future__ import annotations

import dataclasses
import importlib
import io
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from physiofm.encoders.state import standalone_state_dict

MODULE_FORMAT = "physiofm.module.v1"


def export_encoders(objective: nn.Module, directory: str | Path) -> dict[str, Path]:
    """Write each of `objective.encoders()` to `directory/<name>.pt` (full fp32 weights, each file only
    its own tensors)."""
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
                "config_class": f"{type(config).__module__}.{type(config).__qualname__}" if config is not None else "",
                "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {},
                "state_dict": standalone_state_dict(module),
            }, path)
        written[name] = path
    return written


def load_encoder(path: str | Path | BinaryIO, map_location: str = "cpu") -> nn.Module:
    """Rebuild an exported encoder (any method), or CBraMod from the official weights file.

    Only classes of the physiofm package are rebuilt: a file naming anything else is refused.
    """
    from physiofm.encoders.cbramod import EXPORT_FORMAT, CBraMod
    from physiofm.platform.config import build_dataclass

    if not hasattr(path, "read"):
        path = io.BytesIO(Path(path).read_bytes())
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if isinstance(payload, dict) and (payload.get("format") == EXPORT_FORMAT or "patch_embedding.mask_encoding" in payload):
        path.seek(0)
        return CBraMod.from_pretrained(path, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != MODULE_FORMAT:
        raise ValueError(f"not a physiofm export (format {MODULE_FORMAT!r} or {EXPORT_FORMAT!r})")
    module_cls, config_cls = (_physiofm_class(payload[key]) for key in ("class", "config_class"))
    module = module_cls(build_dataclass(config_cls, payload["config"], "config"))
    module.load_state_dict(payload["state_dict"], strict=True)
    return module


def _physiofm_class(dotted: str) -> type:
    module_name, _, name = dotted.rpartition(".")
    if not module_name.startswith("physiofm.") or "<" in name:
        raise ValueError(f"export names class {dotted!r}: only physiofm classes are rebuilt")
    return getattr(importlib.import_module(module_name), name)
