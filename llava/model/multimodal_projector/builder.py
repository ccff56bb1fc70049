"""The vision-to-language projector (upstream names and state-dict keys)."""
import re

import torch.nn as nn


class IdentityMap(nn.Module):
    def forward(self, x, *args, **kwargs):
        return x

    @property
    def config(self):
        return {"mm_projector_type": "identity"}


def build_vision_projector(config, delay_load=False, **kwargs):
    """`linear` | `mlp{N}x_gelu` | `identity`; keys under `model.mm_projector.` as upstream."""
    projector_type = getattr(config, "mm_projector_type", "linear")
    if projector_type == "linear":
        return nn.Linear(config.mm_hidden_size, config.hidden_size)
    match = re.match(r"^mlp(\d+)x_gelu$", projector_type)
    if match:
        layers = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
        for _ in range(1, int(match.group(1))):
            layers += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
        return nn.Sequential(*layers)
    if projector_type == "identity":
        return IdentityMap()
    raise ValueError(f"Unknown projector type: {projector_type!r} (config mm_projector_type)")
