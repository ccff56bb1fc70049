"""What a run does, decided and checked in one place before any weights are read, and said in one line.

Every entry point (the CLI, the eval generators, the tools, training) resolves its settings here:

- `check_generation`, `check_device`, `check_template`: generation settings, the device and the template,
  each a one-line error naming the flag.
- `resolve_pruning`: the pruning in force and where each setting came from. A flag wins; without
  `--pruning-method`, a checkpoint saved with pruning (config.json "pruning") keeps its setting; an
  erank calibration the checkpoint carries (erank_calibration.json) is the default `--erank-avg`.
  `--pruning-method none` always means unpruned. Pruning options given without a method are an error,
  never silently ignored.
- `resolve_template`: `--conv-mode`, else the template the checkpoint was trained with (config.json
  "conv_mode", written by our training), else upstream's name rules.
- `describe`: the one line a run prints (model, template, pruning, sources).

Reading a checkpoint's two small JSON files is the only I/O here.
"""
import json
import os
from dataclasses import dataclass, field, fields

from llava.pruning import METHODS, OPTIONS, PruningConfig
from llava.pruning.config import flags_given

CALIBRATION_FILE = "erank_calibration.json"


class SettingsError(ValueError):
    """A setting that cannot be used: the message names the flag (or file)."""


# ---- checkpoint metadata --------------------------------------------------------------------------------
def _local_folder(model_path):
    """The checkpoint's folder: a local one, or its snapshot in the Hugging Face cache (a missing one is the
    loader's clear error, raised here already, before anything is read)."""
    if not model_path:
        return None
    from llava.model.builder import resolve_checkpoint

    return resolve_checkpoint(os.path.expanduser(model_path), "model_path")


def checkpoint_config(model_path):
    """The checkpoint's config.json as a dict ({} when there is none to read here)."""
    folder = _local_folder(model_path)
    file = os.path.join(folder, "config.json") if folder else None
    if not file or not os.path.isfile(file):
        return {}
    with open(file) as f:
        return json.load(f)


def checkpoint_calibration(model_path):
    """erank_avg of the checkpoint's erank_calibration.json, or None."""
    folder = _local_folder(model_path)
    file = os.path.join(folder, CALIBRATION_FILE) if folder else None
    if not file or not os.path.isfile(file):
        return None
    with open(file) as f:
        value = json.load(f).get("erank_avg")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise SettingsError(f"{file}: erank_avg must be a positive number, got {value!r}")
    return float(value)


# ---- generation, device, template -----------------------------------------------------------------------
def check_generation(args):
    """Temperature, top-p, beams and answer length, when the entry point has them."""
    temperature = getattr(args, "temperature", None)
    if temperature is not None and not temperature >= 0:
        raise SettingsError(f"--temperature must be >= 0 (0 answers greedily), got {temperature}")
    max_new = getattr(args, "max_new_tokens", None)
    if max_new is not None and max_new < 1:
        raise SettingsError(f"--max-new-tokens must be at least 1, got {max_new}")
    top_p = getattr(args, "top_p", None)
    if top_p is not None and not 0 < top_p <= 1:
        raise SettingsError(f"--top-p must be in (0, 1], got {top_p}")
    beams = getattr(args, "num_beams", None)
    if beams is not None and beams < 1:
        raise SettingsError(f"--num-beams must be at least 1, got {beams}")


def check_device(device):
    """A device this machine has; never a silent fall-back to another one."""
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise SettingsError(f"--device {device}: no CUDA device is available here; pass --device cpu")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SettingsError(f"--device {device}: MPS is not available here; pass --device cpu")
    if kind not in ("cuda", "cpu", "mps", "xpu", "npu", "hpu"):
        raise SettingsError(f"--device {device!r}: not a device name (cuda, cuda:1, cpu, mps, ...)")


def check_template(conv_mode):
    from llava.conversation import conv_templates

    if conv_mode is not None and conv_mode not in conv_templates:
        raise SettingsError(f"--conv-mode: unknown template {conv_mode!r}; "
                            f"choose from {', '.join(sorted(conv_templates))}")


def resolve_template(conv_mode, model_path, model_name, fallback=None):
    """(template, where it came from): --conv-mode, the template the checkpoint was trained with, else
    `fallback` (an entry point's upstream default) or upstream's name rules."""
    from llava.conversation import auto_conv_mode, conv_templates

    if conv_mode is not None:
        check_template(conv_mode)
        return conv_mode, "--conv-mode"
    from llava.model.hf_convert import is_llava_hf, template_for

    config = checkpoint_config(model_path)
    recorded = config.get("conv_mode")
    if recorded is None and is_llava_hf(config):  # transformers' layout: the template of the model family
        recorded = template_for(config["text_config"])
    if recorded is not None:
        if recorded not in conv_templates:
            raise SettingsError(f"{model_path}/config.json: conv_mode {recorded!r} is not a known template; "
                                f"pass --conv-mode")
        return recorded, "checkpoint"
    if fallback is not None:
        return fallback, "default"
    return auto_conv_mode(model_name), "model name"


# ---- pruning --------------------------------------------------------------------------------------------
@dataclass
class Pruning:
    """The pruning in force (`config`) and, per setting that is not a default, where it came from."""

    config: PruningConfig
    sources: dict = field(default_factory=dict)

    def describe(self):
        """'agile K=64 erank_avg=12.03 (calibration)' or 'none'; the method's source in brackets."""
        cfg = self.config
        if not cfg.is_active:
            text = "none"
        else:
            text = cfg.method if cfg.visual_token_num is None else f"{cfg.method} K={cfg.visual_token_num}"
            defaults = PruningConfig()
            for f in fields(cfg):
                if f.name in ("method", "visual_token_num", "pruning_stats"):
                    continue
                value = getattr(cfg, f.name)
                if value != getattr(defaults, f.name):
                    if isinstance(value, tuple):
                        value = ",".join(str(v) for v in value)
                    text += f" {f.name}={value:g}" if isinstance(value, float) else f" {f.name}={value}"
                    text += f" ({self.sources.get(f.name, 'checkpoint')})"
        if cfg.pruning_stats:
            text += " +stats"
        return text + f" [{self.sources.get('method', 'default')}]"


def resolve_pruning(args, model_path):
    """The pruning in force for an entry point's parsed `args` (built with add_pruning_args)."""
    given = flags_given(args)
    flag_values = {name: getattr(args, name) for name in given}
    saved = checkpoint_config(model_path).get("pruning") or {}
    unknown = sorted(set(saved) - {f.name for f in fields(PruningConfig)})
    if unknown:
        raise SettingsError(f"{model_path}/config.json: unknown pruning settings {unknown}; pass --pruning-method")
    calibration = checkpoint_calibration(model_path)
    sources = {}
    if "method" in given:
        values, sources["method"] = {}, "flag"
    elif saved.get("method", "none") != "none":
        values = {k: v for k, v in saved.items() if k != "pruning_stats"}
        sources = {k: "checkpoint" for k in values}
    else:
        values = {}
    values.update(flag_values)
    sources.update({k: "flag" for k in flag_values})
    method = values.get("method", "none")
    if "erank_avg" not in given and calibration is not None and method in METHODS \
            and "erank_avg" in METHODS[method].option_names:
        values["erank_avg"], sources["erank_avg"] = calibration, "calibration"
    config = PruningConfig(**values)
    if not config.is_active and "method" not in given:  # (--pruning-method none says it: unpruned, options unused)
        unused = sorted(k for k in given if k != "pruning_stats")
        if unused:
            flags = ", ".join(OPTIONS[k].flag_name if k in OPTIONS else "--" + k.replace("_", "-") for k in unused)
            raise SettingsError(f"{flags} given without a pruning method: pass --pruning-method (it would "
                                f"otherwise be ignored)")
    try:
        config.validate()
    except ValueError as e:
        raise SettingsError(str(e)) from None
    if config.stage == "pre-projector" and config.budget_scope != "per-view":
        raise SettingsError(f"--pruning-method {config.method} supports --budget-scope per-view only")
    return Pruning(config, sources)


def describe(model_path, template=None, template_source=None, pruning=None, **extra):
    """The line a run prints before it starts: model, template, pruning and what else it names."""
    parts = [f"model {model_path}"]
    if template is not None:
        parts.append(f"template {template} [{template_source}]")
    if pruning is not None:
        parts.append(f"pruning {pruning.describe()}")
    parts += [f"{k.replace('_', '-')} {v}" for k, v in extra.items() if v is not None]
    return "run: " + " | ".join(parts)


def note_nothing_pruned(model, config, out=None):
    """One line on stderr when K is at least the visual tokens of a view: a method that prunes nothing."""
    import sys

    if not config.is_active or config.visual_token_num is None:
        return
    available = model.get_vision_tower().num_patches
    if config.visual_token_num >= available:
        print(f"note: --visual-token-num {config.visual_token_num} >= the {available} visual tokens of a view: "
              f"{config.method} keeps them all (no pruning)", file=out or sys.stderr)
