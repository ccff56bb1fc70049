"""FastV inside the decoder: at layer L, keep only the K image tokens the last prompt token attended to
most at layer L-1 (head-averaged), drop the others from the hidden states and from the KV cache of
layers >= L. The selection itself is the pure function `llava.pruning.fastv_select`.

The decoder layers are run here, one by one, so layer L can work on the shorter sequence. Kept
tokens keep their original RoPE positions (gaps included, as FastV's in-place variant does), and new
tokens continue from the original length. Layers then take no mask and rely on SDPA's causal mode
(prefill) and full attention (one-token decode steps), so FastV needs unpadded rows and SDPA or
flash attention.
"""
import torch
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from llava.pruning import fastv_select

from .compat import causal_lm_output, layer_cache_kwargs


def last_token_attention(attn_module, queries, keys, position_embeddings):
    """Head-averaged attention of the last query over all keys, from a layer's q/k projections. [B, T]."""
    b, t, _ = keys.shape
    d = attn_module.head_dim
    q = queries[:, -1:].reshape(b, 1, -1, d).transpose(1, 2)
    k = keys.reshape(b, t, -1, d).transpose(1, 2)
    cos, sin = position_embeddings
    q, _ = apply_rotary_pos_emb(q, q, cos[:, -1:], sin[:, -1:])
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped-query attention
    scores = (q.float() @ k.float().transpose(-1, -2)).squeeze(2) * d**-0.5  # [B, H, T]
    return scores.softmax(dim=-1).mean(dim=1)


def fastv_forward(model, inputs_embeds, position_ids, past_key_values, use_cache, image_span, k, layer_l,
                  logits_to_keep=0, records=None):
    """One decoder pass with FastV. image_span (start, length) of the image tokens in the prompt; only
    used on the prefill pass (past empty and more than one token)."""
    inner = model.get_model()
    if use_cache and past_key_values is None:
        past_key_values = DynamicCache()
    prefill = inputs_embeds.shape[1] > 1 and (past_key_values is None or past_key_values.get_seq_length() == 0)
    if position_ids is None:
        past = 0 if past_key_values is None else past_key_values.get_seq_length()
        position_ids = torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device)[None]
    hidden = inputs_embeds
    position_embeddings = inner.rotary_emb(hidden, position_ids)
    start, length = image_span if image_span is not None else (0, 0)
    prune = prefill and image_span is not None and k < length
    captured = {}
    for i, layer in enumerate(inner.layers[: model.config.num_hidden_layers]):
        if prune and i == layer_l:
            attn = last_token_attention(layer_before.self_attn, captured["q"], captured["k"], position_embeddings)
            keep_img = fastv_select(attn[:, start : start + length], k) + start  # [B, k]
            t = hidden.shape[1]
            text = torch.cat([torch.arange(start), torch.arange(start + length, t)]).to(hidden.device)
            keep = torch.cat([text[None].expand(hidden.shape[0], -1), keep_img], dim=1).sort(dim=-1).values
            hidden = hidden.gather(1, keep[:, :, None].expand(-1, -1, hidden.shape[-1]))
            position_ids = position_ids.expand(hidden.shape[0], -1).gather(1, keep)
            position_embeddings = inner.rotary_emb(hidden, position_ids)
            if records is not None:  # one record per prompt, like the selection before the LLM
                records.extend({"kept_indices": row, "fastv_layer": layer_l} for row in (keep_img - start).tolist())
        hooks = []
        if prune and i == layer_l - 1:
            layer_before = layer
            hooks = [layer.self_attn.q_proj.register_forward_hook(lambda m, a, o: captured.__setitem__("q", o)),
                     layer.self_attn.k_proj.register_forward_hook(lambda m, a, o: captured.__setitem__("k", o))]
        try:
            out = layer(hidden, attention_mask=None, position_ids=position_ids, use_cache=use_cache,
                        position_embeddings=position_embeddings, **layer_cache_kwargs(past_key_values))
        finally:
            for hook in hooks:
                hook.remove()
        hidden = out[0] if isinstance(out, tuple) else out
    hidden = inner.norm(hidden)
    if logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    return causal_lm_output(model.lm_head(hidden), past_key_values)
