"""Diversity by greedy max-min (k-center) walks on cosine distance: DivPrune and FPS."""
from ..geometry import attention_order, cosine_distance, most_isolated, walk_from
from ..registry import register


@register("divprune", summary="DivPrune: greedy max-min diversity on cosine distance")
def select_divprune(features, attention, k):
    """DivPrune: greedy max-min diversity on cosine distance. The first token is the most isolated one
    (largest distance to its nearest neighbour); then repeatedly the token farthest from the chosen set
    (largest min distance to it). Ties to the lowest index."""
    dist = cosine_distance(features)
    return walk_from(dist, most_isolated(dist), k)


@register("fps", needs_attention=True, summary="farthest point sampling from the top-attention token")
def select_fps(features, attention, k):
    """Farthest point sampling on cosine distance, starting from the highest-attention token (the
    FPSPruner baseline of the AgilePruner paper)."""
    return walk_from(cosine_distance(features), attention_order(attention)[:, 0], k)
