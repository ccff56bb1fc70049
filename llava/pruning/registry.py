"""The method registry: each method declares, next to its function, where it acts (its `stage`), what it
reads and which options it takes. Everything else (PruningConfig's fields, the command-line flags, their
validation, the README's flag table) is generated from these declarations.

Stages (where the number of visual tokens changes):
    none            `none`: every token reaches the LLM.
    post-projector  fn(features [B, N, D] float32, attention [B, N] float32 or None, k, **signals, **own options)
                    -> indices [B, k] of the kept projected tokens (any order; the front door sorts them).
    pre-projector   fn(states [B, N, C], attention, k, **signals, **own options) -> (tokens [B, k, C], indices
                    [B, k'] of the states kept as they are, or None): the tokens are built from the tower's
                    select-layer states and then go through the projector (merging methods).
    decoder         fn(step, k, **own options) -> kept image positions, called by the shared decoder hook
                    (llava/model/decoder_pruning.py) before each decoder layer of the prefill.

`signals` are extra inputs a method asks for by name in `inputs` (e.g. "cls_state", "keys", "states"); the
model computes only what the active method asks for. A method receives only its own options.
"""
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

STAGES = ("none", "pre-projector", "post-projector", "decoder")


@dataclass(frozen=True)
class Option:
    """One option of one or more methods: its PruningConfig field `name`, flag (default --name-with-dashes),
    default, kind (float, int, str, bool or "ints": a comma-separated list of integers), allowed range or
    choices, and help. Methods that share an option (e.g. erank_avg) declare the same Option object."""

    name: str
    default: Any
    help: str
    kind: Any = float
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False  # value must be > low (else >= low)
    choices: Optional[Tuple] = None
    flag: Optional[str] = None
    nullable: bool = False  # None is allowed (the method derives the value, e.g. from K)
    decoder_layer: Any = False  # the value (or each) is a decoder layer index checked against the model: True =
    #                             the layer before which it acts, in [1, L-1]; "output" = the layer whose output is
    #                             cut, in [0, L-2]

    @property
    def flag_name(self):
        return self.flag or "--" + self.name.replace("_", "-")

    def parse(self, text):
        """argparse `type`: text -> value."""
        if self.kind == "ints":
            try:
                return tuple(int(x) for x in text.split(",") if x.strip())
            except ValueError:
                raise ValueError(f"{self.flag_name} takes comma-separated integers, got {text!r}") from None
        if self.kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{self.flag_name} takes true or false, got {text!r}")
        return self.kind(text)

    def check(self, value):
        """The value, normalised (int -> float for float options, list -> tuple for "ints"), or a ValueError
        naming the flag."""
        flag = self.flag_name
        if value is None and self.nullable:
            return None
        if self.kind == "ints":
            if isinstance(value, str):
                value = self.parse(value)
            if not isinstance(value, (list, tuple)) or not value or any(
                    isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
                raise ValueError(f"{flag} must be a non-empty list of integers, got {value!r}")
            value = tuple(int(v) for v in value)
            items = value
        elif self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be true or false, got {value!r}")
            return value
        elif self.kind is str:
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"{flag} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(f"{flag} must be an integer, got {value!r}")
            value = int(value)
            items = (value,)
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{flag} must be a number, got {value!r}")
            value = float(value)
            items = (value,)
        for v in items:
            if self.low is not None and (v <= self.low if self.low_open else v < self.low):
                raise ValueError(f"{flag} must be {'>' if self.low_open else '>='} {self.low}, got {v!r}")
            if self.high is not None and v > self.high:
                raise ValueError(f"{flag} must be <= {self.high}, got {v!r}")
        return value


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable
    stage: str
    options: Tuple[Option, ...] = ()
    needs_attention: bool = False  # reads the CLS->patch attention row of the tower's select layer
    inputs: Tuple[str, ...] = ()  # extra signals from the tower (see the module docstring)
    k_optional: Any = False  # without --visual-token-num the method decides the count itself (or a callable of
    #                          the options saying when it does, e.g. pdrop with --pdrop-ratio)
    check: Optional[Callable] = None  # cross-option check: check(options dict) raises ValueError
    summary: str = ""  # one line for --help and the README's table
    option_names: Tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self):
        object.__setattr__(self, "option_names", tuple(o.name for o in self.options))

    @property
    def is_active(self):
        return self.stage != "none"

    def count_is_optional(self, options):
        """Whether K may be left out with these (own, checked) options."""
        return self.k_optional(options) if callable(self.k_optional) else bool(self.k_optional)

    def own_options(self, values):
        """The method's own options from a dict holding (at least) them: {name: value}."""
        return {name: values[name] for name in self.option_names}

    def validate(self, options):
        """Check the method's own options (missing ones take their defaults); returns the full checked dict.
        An option that is not the method's is a ValueError naming it."""
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise ValueError(f"pruning method {self.name!r} takes no option {', '.join(unknown)}; its options: "
                             f"{', '.join(self.option_names) or 'none'}")
        values = {o.name: o.check(options.get(o.name, o.default)) for o in self.options}
        if self.check is not None:
            self.check(values)
        return values


METHODS = {}  # name -> Method
OPTIONS = {}  # option name -> Option (shared by every method that declares it)
RESERVED = {"method", "visual_token_num", "budget_scope", "pruning_stats"}  # PruningConfig's own fields


def register(name, stage="post-projector", options=(), needs_attention=False, inputs=(), k_optional=False,
             check=None, summary=""):
    """Decorator: `@register("name", stage=..., options=(Option(...), ...))` adds a method to METHODS."""
    if stage not in STAGES:
        raise ValueError(f"pruning method {name!r}: stage must be one of {', '.join(STAGES)}, got {stage!r}")

    def wrap(fn):
        if name in METHODS:
            raise ValueError(f"pruning method {name!r} is registered twice")
        for option in options:
            if option.name in RESERVED:
                raise ValueError(f"pruning method {name!r}: option name {option.name!r} is reserved")
            known = OPTIONS.setdefault(option.name, option)
            if known != option:
                raise ValueError(f"pruning method {name!r} declares option {option.name!r} differently from "
                                 f"an earlier method; share one Option object")
        doc = summary or (fn.__doc__ or "").strip().split("\n")[0]
        METHODS[name] = Method(name, fn, stage, tuple(options), needs_attention, tuple(inputs), k_optional,
                               check, doc)
        return fn

    return wrap


def default_options():
    """Every declared option's default: {name: default}."""
    return {name: option.default for name, option in OPTIONS.items()}


def users_of(option_name):
    """The methods that take an option, sorted."""
    return sorted(m.name for m in METHODS.values() if option_name in m.option_names)


def check_k(k):
    """k as a Python int, or a ValueError if it is not a positive integer."""
    if isinstance(k, bool) or not hasattr(k, "__index__") or k.__index__() <= 0:
        raise ValueError(f"visual token number k must be a positive integer, got {k!r}")
    return k.__index__()
