from .clip_encoder import CLIPVisionTower


def build_vision_tower(vision_tower_cfg, **kwargs):
    """Upstream name. The tower is located lazily (local folder or HF cache), so building never
    fails on a missing tower; loading it does, with a clear error."""
    name = getattr(vision_tower_cfg, "mm_vision_tower", getattr(vision_tower_cfg, "vision_tower", None))
    if name is None:
        raise ValueError("No vision tower configured (config key mm_vision_tower)")
    if getattr(vision_tower_cfg, "s2", False):
        raise NotImplementedError("S2 multi-scale vision towers are not supported in this fork")
    return CLIPVisionTower(name, args=vision_tower_cfg, **kwargs)
