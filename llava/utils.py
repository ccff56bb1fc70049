"""Small helpers with upstream's names (no logging redirection, no OpenAI moderation call), and the
argument parser every command-line entry point is built with. Torch is imported where it is used, so the
scorers' --help and start-up stay fast."""
import argparse
import logging
import os
from contextlib import contextmanager

server_error_msg = "**NETWORK ERROR DUE TO HIGH TRAFFIC. PLEASE REGENERATE OR REFRESH THIS PAGE.**"
moderation_msg = "YOUR INPUT VIOLATES OUR CONTENT MODERATION GUIDELINES. PLEASE TRY AGAIN."


_DEFAULT_INIT = {}  # Linear/LayerNorm -> torch's own reset_parameters, kept by disable_torch_init


def _init_classes():
    import torch

    return (torch.nn.Linear, torch.nn.LayerNorm)


def disable_torch_init():
    """Skip the default (random) initialisation of Linear/LayerNorm; the weights are loaded anyway.
    Process-wide, as upstream; `torch_init()` restores it where new random weights are made."""
    for cls in _init_classes():
        _DEFAULT_INIT.setdefault(cls, cls.reset_parameters)
        cls.reset_parameters = lambda self: None


@contextmanager
def torch_init():
    """Within the block, Linear/LayerNorm initialise as torch does by default, even after
    disable_torch_init() (which would leave freshly built weights as uninitialised memory)."""
    current = {cls: cls.reset_parameters for cls in _init_classes()}
    for cls in current:
        cls.reset_parameters = _DEFAULT_INIT.get(cls, current[cls])
    try:
        yield
    finally:
        for cls, fn in current.items():
            cls.reset_parameters = fn


class _DropNotice(logging.Filter):
    """Drops the log records whose message starts with `prefix`."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.msg).startswith(self.prefix)


_CPU_NOTICE = _DropNotice("Setting accelerator to CPU")


def quiet_deepspeed_cpu_notice():
    """DeepSpeed (imported by transformers' Trainer and save_pretrained when it is installed) warns on every
    machine without a GPU that it uses the CPU; that is what a CPU run asked for. Drops that one notice."""
    logging.getLogger("DeepSpeed").addFilter(_CPU_NOTICE)  # a filter added twice is kept once


@contextmanager
def progress_bars(enabled):
    """transformers' progress bars (weight loading) on or off within the block, then as they were: off for
    loads that take a blink, on for long ones."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def pretty_print_semaphore(semaphore):
    """`Semaphore(value=..., locked=...)`, or "None", for worker status logs."""
    if semaphore is None:
        return "None"
    return f"Semaphore(value={semaphore._value}, locked={semaphore.locked()})"


class HelpFormatter(argparse.HelpFormatter):
    """Each flag's help ends with its default, unless the default is None or False (nothing to say)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and "%(default)" not in text and action.default is not argparse.SUPPRESS \
                and action.default is not None and action.default is not False:
            text += " (default: %(default)s)"
        return text


def entry_parser(module, doc, **kwargs):
    """The argparse parser of the entry point `python -m <module>`: the usage line names that command,
    the description is the first paragraph of the module's docstring (whole sentences), and every
    flag's help shows its default."""
    first = (doc or "").strip().split("\n\n")[0]
    return argparse.ArgumentParser(prog=f"python -m {module}", description=" ".join(first.split()),
                                   formatter_class=HelpFormatter, **kwargs)


def available_cpus():
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
