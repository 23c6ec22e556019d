"""Make random-weight networks behave like trained ones where the converter can tell the difference.

An initialiser's activations are not a trained network's: BatchNorm statistics are those of the
initialiser, classifier logits are tiny (softmax outputs all ~1/classes), a detector's DFL bins are
flat, recurrent states stay near zero. Quantization ranges follow activations, so each of these is
set here from data, not by hand:

    recalibrate_bn   BatchNorm running statistics re-estimated on data (train-mode passes,
                     momentum=None = a cumulative average); everything else stays in eval mode
    scale_output     rescale a layer's weight so its output (bias excluded) has a given std on data,
                     as trained classifier heads (logit std 2-5) and LSUV-initialised layers have
"""
from __future__ import annotations

import torch


def recalibrate_bn(model: torch.nn.Module, batches) -> torch.nn.Module:
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    if bns:
        with torch.no_grad():
            for batch in batches:
                model(*batch)
    return model.eval()


def scale_output(model: torch.nn.Module, layer: torch.nn.Module, batches, target: float) -> None:
    """Scale ``layer.weight`` so that ``layer``'s output minus its bias has std ``target`` on ``batches``."""
    seen = []
    if not layer.weight.any():      # a zero-initialised head (torchvision's ViT): give it weights first
        torch.nn.init.normal_(layer.weight, std=0.02)

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        bias = getattr(layer, "bias", None)
        if bias is not None and out.dim() >= 2 and out.shape[1] == bias.shape[0]:
            out = out - bias.view(1, -1, *([1] * (out.dim() - 2)))
        elif bias is not None and out.shape[-1] == bias.shape[0]:
            out = out - bias
        seen.append(out.detach().flatten())

    handle = layer.register_forward_hook(hook)
    with torch.no_grad():
        for batch in batches:
            model(*batch)
    handle.remove()
    std = float(torch.cat(seen).std())
    with torch.no_grad():
        layer.weight.mul_(target / max(std, 1e-12))


def last_linear(model: torch.nn.Module) -> torch.nn.Linear:
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
