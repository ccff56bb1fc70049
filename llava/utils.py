"""Small helpers with upstream's names (no logging redirection, no OpenAI moderation call)."""
from contextlib import contextmanager

import torch

server_error_msg = "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**"
moderation_msg = "YOUR INPUT VIOLATES OUR CONTENT MODERATION GUIDELINES. PLEASE TRY AGAIN."


_DEFAULT_INIT = {cls: cls.reset_parameters for cls in (torch.nn.Linear, torch.nn.LayerNorm)}


def disable_torch_init():
    """Skip the default (random) initialisation of Linear/LayerNorm; the weights are loaded anyway.
    Process-wide, as upstream; `torch_init()` restores it where new random weights are made."""
    setattr(torch.nn.Linear, "reset_parameters", lambda self: None)
    setattr(torch.nn.LayerNorm, "reset_parameters", lambda self: None)


@contextmanager
def torch_init():
    """Within the block, Linear/LayerNorm initialise as torch does by default, even after
    disable_torch_init() (which would leave freshly built weights as uninitialised memory)."""
    current = {cls: cls.reset_parameters for cls in _DEFAULT_INIT}
    for cls, fn in _DEFAULT_INIT.items():
        cls.reset_parameters = fn
    try:
        yield
    finally:
        for cls, fn in current.items():
            cls.reset_parameters = fn


def pretty_print_semaphore(semaphore):
    """`Semaphore(value=..., locked=...)`, or "None", for worker status logs."""
    if semaphore is None:
        return "None"
    return f"Semaphore(value={semaphore._value}, locked={semaphore.locked()})"
