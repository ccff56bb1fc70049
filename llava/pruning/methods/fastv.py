"""FastV inside the decoder: at layer L, keep the K image tokens the last prompt token attended to most at
layer L-1 (head-averaged), and drop the others from the hidden states and the KV cache of layers >= L."""
import torch

from ..geometry import attention_order
from ..registry import Option, check_k, register

FASTV_LAYER = Option("fastv_layer", 2, "fastv: decoder layer at which image tokens are pruned (by the attention "
                     "of the layer before it)", kind=int, low=1, decoder_layer=True)


def fastv_select(last_token_attention, k):
    """FastV: the k image tokens the last prompt token attends to most (attention of the layer before
    the pruning layer, averaged over heads). last_token_attention [B, N] -> ascending indices [B, k];
    k >= N keeps all. Ties to the lower index."""
    if last_token_attention.ndim != 2:
        raise ValueError(f"last_token_attention must be [B, N], got shape {tuple(last_token_attention.shape)}")
    k = check_k(k)
    b, n = last_token_attention.shape
    if k >= n:
        return torch.arange(n, device=last_token_attention.device).expand(b, n)
    return attention_order(last_token_attention.float())[:, :k].sort(dim=-1).values


@register("fastv", stage="decoder", options=(FASTV_LAYER,),
          summary="FastV: inside the LLM, the K image tokens the last prompt token attends to most")
def fastv_rule(step, k, fastv_layer=2):
    """The decoder hook's call before layer `step.layer`: at fastv_layer, the image positions (within the
    image span) to keep, from layer fastv_layer-1's attention of the last prompt token; None elsewhere."""
    if step.layer != fastv_layer:
        return None
    start, length = step.image
    attention = step.attention(fastv_layer - 1, step.previous_hidden, "last")[:, -1]  # [B, T]
    return fastv_select(attention[:, start:start + length], k)
