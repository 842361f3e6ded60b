"""State dicts that own their tensors, for files written outside a training engine."""
from __future__ import annotations

import torch
from torch import nn


def standalone_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` as contiguous CPU copies (floating point as fp32).

    `torch.save` writes the whole storage behind every tensor. DeepSpeed's ZeRO keeps all parameters
    as views of one flat buffer, so saving them as they are puts every parameter of the model into
    each encoder's file; a copy holds only its own elements.
    """
    out = {}
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)  # fp32 even after bf16 training
        out[name] = tensor.clone(memory_format=torch.contiguous_format)
    return out
