"""Small helpers with upstream's names."""
import torch


def disable_torch_init():
    """Skip the default (random) initialisation of Linear/LayerNorm; the weights are loaded anyway."""
    setattr(torch.nn.Linear, "reset_parameters", lambda self: None)
    setattr(torch.nn.LayerNorm, "reset_parameters", lambda self: None)
