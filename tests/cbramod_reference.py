"""An independent float64 CBraMod forward written from the paper/spec with functional ops.

It shares no code with `physiofm.encoders.cbramod` (attention is computed by hand, not by
nn.MultiheadAttention), so agreement at shapes and weights the fixtures do not cover is evidence
that the module computes the published model, not merely that it reproduces one case.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _attention(x: torch.Tensor, state: dict, prefix: str, heads: int) -> torch.Tensor:
    seqs, length, width = x.shape
    qkv = x @ state[f"{prefix}.in_proj_weight"].T + state[f"{prefix}.in_proj_bias"]
    q, k, v = (t.reshape(seqs, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, -1))
    weights = torch.softmax(q @ k.transpose(-1, -2) / (width // heads) ** 0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(seqs, length, width)
    return out @ state[f"{prefix}.out_proj.weight"].T + state[f"{prefix}.out_proj.bias"]


def reference_forward(state: dict, x: torch.Tensor, mask: torch.Tensor | None = None, nhead: int = 8):
    """Returns (patch_embedding, backbone_features, output) in float64."""
    s = {k: v.double() for k, v in state.items()}
    x = x.double()
    b, c, n, p = x.shape
    if mask is not None:
        x = x.clone()
        x[mask.bool()] = s["patch_embedding.mask_encoding"]
    h = x.reshape(b, 1, c * n, p)
    for conv, norm, stride, pad in (("0", "1", 25, 24), ("3", "4", 1, 1), ("6", "7", 1, 1)):
        h = F.conv2d(h, s[f"patch_embedding.proj_in.{conv}.weight"], s[f"patch_embedding.proj_in.{conv}.bias"],
                     stride=(1, stride), padding=(0, pad))
        h = F.gelu(F.group_norm(h, 5, s[f"patch_embedding.proj_in.{norm}.weight"],
                                s[f"patch_embedding.proj_in.{norm}.bias"]))
    time = h.permute(0, 2, 1, 3).reshape(b, c, n, -1)
    if "patch_embedding.time_proj.weight" in s:  # non-official sizes project conv features to d_model
        time = time @ s["patch_embedding.time_proj.weight"].T + s["patch_embedding.time_proj.bias"]
    spectrum = torch.fft.rfft(x, dim=-1, norm="forward").abs()
    emb = time + spectrum @ s["patch_embedding.spectral_proj.0.weight"].T + s["patch_embedding.spectral_proj.0.bias"]
    w = s["patch_embedding.positional_encoding.0.weight"]
    pos = F.conv2d(emb.permute(0, 3, 1, 2), w, s["patch_embedding.positional_encoding.0.bias"],
                   padding=(w.shape[2] // 2, w.shape[3] // 2), groups=w.shape[0])
    emb = emb + pos.permute(0, 2, 3, 1)
    feats = emb
    d = emb.shape[-1]
    layers = sorted({int(k.split(".")[2]) for k in s if k.startswith("encoder.layers.")})
    for i in layers:
        pre = f"encoder.layers.{i}"
        y = F.layer_norm(feats, (d,), s[f"{pre}.norm1.weight"], s[f"{pre}.norm1.bias"])
        spatial = y[..., : d // 2].transpose(1, 2).reshape(b * n, c, d // 2)
        temporal = y[..., d // 2:].reshape(b * c, n, d // 2)
        spatial = _attention(spatial, s, f"{pre}.self_attn_s", nhead // 2).reshape(b, n, c, d // 2).transpose(1, 2)
        temporal = _attention(temporal, s, f"{pre}.self_attn_t", nhead // 2).reshape(b, c, n, d // 2)
        feats = feats + torch.cat([spatial, temporal], dim=-1)
        y = F.layer_norm(feats, (d,), s[f"{pre}.norm2.weight"], s[f"{pre}.norm2.bias"])
        y = F.gelu(y @ s[f"{pre}.linear1.weight"].T + s[f"{pre}.linear1.bias"])
        feats = feats + y @ s[f"{pre}.linear2.weight"].T + s[f"{pre}.linear2.bias"]
    out = feats @ s["proj_out.0.weight"].T + s["proj_out.0.bias"]
    return emb, feats, out
