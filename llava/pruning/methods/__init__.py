"""The pruning methods, one module per method (or per family). Every module in this package is imported
here, so a new method is one new file whose function is decorated with `@register(...)`
(llava/pruning/registry.py); its flags, config fields and validation follow from the declaration."""
import importlib
import pkgutil

from ..geometry import (attention_order, complexity_share, cosine_distance, hybrid_geometry,  # noqa: F401
                        max_min_walk, most_isolated, token_geometry, true_positions, walk_from)


def _import_all():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_all()

from .visionzip import VISIONZIP_DOMINANT_SHARE, visionzip_tokens  # noqa: E402,F401
from .fastv import fastv_select  # noqa: E402,F401
