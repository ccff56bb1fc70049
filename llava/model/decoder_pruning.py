"""The decoder hook every in-decoder pruning method shares (FastV, PDrop, SparseVLM, DART, ...).

During the prefill the decoder layers are run here one by one. Before each layer the active method's
function is called once per prompt, `fn(step, k, **options)`, with a `DecoderStep` (that prompt's tensors,
padding removed); it returns None (nothing to do at this layer) or the image positions to keep (relative to
the current image span, [1, k']), or a dict {"keep": ..., "insert": new tokens [1, m, C] placed right after
the kept image tokens, "renumber": True to renumber positions contiguously as PDrop/SparseVLM do}. The hook
then shortens the hidden states, the position ids and the attention mask; every layer caches what it saw, so
the KV cache of the layers after a cut is the shorter one. Rows are re-padded on the side the batch uses.

Positions: kept tokens keep their original RoPE positions by default (FastV, DART), and decode steps continue
from the full prompt length; with "renumber" a layer group's positions are contiguous and its decode steps
are shifted by the tokens removed before it (PDrop's and SparseVLM's own behaviour). Masks: an unpadded
batch runs with no mask (SDPA's causal mode, bit-identical to an unhooked decoder); padded rows get an
explicit additive mask per layer group, so left-padded batched generation works (SDPA or eager; flash
attention takes unpadded batches only). Training is refused.
"""
import torch
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from .compat import causal_lm_output, layer_cache_kwargs


class DecoderStep:
    """What an in-decoder method sees before decoder layer `layer`, for one prompt (batch of one, no padding).

    hidden [1, T, C]: input of layer `layer` (after earlier cuts); previous_hidden [1, T', C]: input of layer
    `layer - 1` (None before layer 0); positions [1, T]; image (start, length) of the current image span in
    hidden; text_after_image (start, end); embeds [1, T0, C] the prompt's layer-0 input; num_layers."""

    def __init__(self, model, layer, hidden, previous_hidden, positions, previous_positions, image, embeds):
        self._model = model
        self.layer = layer
        self.hidden = hidden
        self.previous_hidden = previous_hidden
        self.positions = positions
        self._previous_positions = previous_positions
        self.image = image
        self.text_after_image = (image[0] + image[1], hidden.shape[1])
        self.embeds = embeds
        self.num_layers = model.config.num_hidden_layers

    def _positions_for(self, hidden):
        if hidden.shape[1] == self.positions.shape[1]:
            return self.positions
        if self._previous_positions is not None and hidden.shape[1] == self._previous_positions.shape[1]:
            return self._previous_positions
        raise ValueError("DecoderStep: hidden must be step.hidden or step.previous_hidden")

    def _qk(self, layer_index, hidden):
        layer = self._model.get_model().layers[layer_index]
        attn = layer.self_attn
        normed = layer.input_layernorm(hidden)
        b, t, _ = hidden.shape
        d = attn.head_dim
        q = attn.q_proj(normed).view(b, t, -1, d).transpose(1, 2)
        k = attn.k_proj(normed).view(b, t, -1, d).transpose(1, 2)
        cos, sin = self._model.get_model().rotary_emb(hidden, self._positions_for(hidden))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, d

    @property
    def rope_inv_freq(self):
        """The decoder's rotary inverse frequencies [head_dim / 2] (SparseVLM+'s RoPE correction)."""
        return self._model.get_model().rotary_emb.inv_freq

    def attention(self, layer_index, hidden, queries="last", per_head=False):
        """Causal softmax attention (float32) of decoder layer `layer_index` computed from `hidden` (its input:
        step.hidden or step.previous_hidden), rows = the query positions (a LongTensor [Q], or "last" for the
        last one): head-averaged [1, Q, T], or [1, H, Q, T] with per_head."""
        q, k, d = self._qk(layer_index, hidden)
        t = hidden.shape[1]
        rows = torch.tensor([t - 1], device=hidden.device) if isinstance(queries, str) else queries.to(hidden.device)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped-query attention
        scores = (q[:, :, rows].float() @ k.float().transpose(-1, -2)) * d ** -0.5  # [1, H, Q, T]
        causal = torch.arange(t, device=hidden.device)[None, :] > rows[:, None]
        scores = scores.masked_fill(causal, float("-inf"))
        probs = scores.softmax(dim=-1)
        return probs if per_head else probs.mean(dim=1)

    def keys(self, layer_index, hidden):
        """Decoder layer `layer_index`'s keys computed from `hidden`, after RoPE: [1, T, H_kv * d]."""
        _, k, _ = self._qk(layer_index, hidden)
        return k.transpose(1, 2).flatten(2)

    def final_norm(self, hidden):
        """The LLM's final RMSNorm (DART's duplication metric)."""
        return self._model.get_model().norm(hidden)


def _additive_mask(key_mask, query_len, dtype, causal):
    """key_mask [B, S] bool (True = a real token) -> [B, 1, Q, S] additive mask (0 / dtype min), causal over
    the last Q keys when `causal`."""
    b, s = key_mask.shape
    allowed = key_mask[:, None, None, :].expand(b, 1, query_len, s)
    if causal:
        q_pos = torch.arange(s - query_len, s, device=key_mask.device)[:, None]
        allowed = allowed & (torch.arange(s, device=key_mask.device)[None, :] <= q_pos)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


class DecoderPruningState:
    """Per-prompt image spans for the next prefill, and what the decode steps need from it: per layer, the
    mask of the tokens its cache holds and the position shift of its layer group."""

    def __init__(self, spans):
        self.spans = spans  # per row: (start, length) in the padded prompt, or None (no image)
        self.key_masks = None  # per layer [B, S_l] bool, after the prefill (grows with each decode step)
        self.layer_tokens = None  # per layer, the prefill's tokens per row [B] (what each layer ran on)
        self.shifts = None  # per layer [B] long
        self.padded = False


def _apply(result, row_hidden, row_pos, row_orig, span, renumber_from):
    """One row's cut: (hidden [T', C], positions [T'], original image indices [k'], new span, renumber)."""
    if isinstance(result, dict):
        keep, insert, renumber = result["keep"], result.get("insert"), bool(result.get("renumber", False))
    else:
        keep, insert, renumber = result, None, False
    keep = keep.reshape(-1).to(row_hidden.device)
    start, length = span
    if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= length):
        raise ValueError(f"in-decoder method returned image positions outside [0, {length})")
    keep = keep.sort().values
    pieces = [row_hidden[:start], row_hidden[start + keep]]
    pos = [row_pos[:start], row_pos[start + keep]]
    orig = [row_orig[keep]]
    if insert is not None and insert.shape[-2]:
        insert = insert.reshape(-1, row_hidden.shape[-1]).to(row_hidden.dtype)
        pieces.append(insert)
        # inserted tokens take the position of the last kept image token (renumbering overrides it)
        last = row_pos[start + keep[-1]] if keep.numel() else row_pos[max(start - 1, 0)]
        pos.append(last.expand(insert.shape[0]))
        orig.append(torch.full((insert.shape[0],), -1, dtype=row_orig.dtype, device=row_orig.device))
    pieces.append(row_hidden[start + length:])
    pos.append(row_pos[start + length:])
    hidden, positions = torch.cat(pieces), torch.cat(pos)
    new_length = keep.numel() + (0 if insert is None else insert.shape[0])
    if renumber:
        positions = torch.arange(renumber_from, renumber_from + hidden.shape[0], device=hidden.device)
    return hidden, positions, torch.cat(orig), (start, new_length), renumber


def pruned_decoder_forward(model, fn, options, k, state, inputs_embeds, attention_mask, position_ids,
                           past_key_values, use_cache, logits_to_keep=0, records=None, left_padding=True):
    """One decoder pass with an in-decoder method (prefill: the method runs; decode: the saved per-layer
    masks and position shifts apply). Returns a CausalLMOutputWithPast (logits, cache)."""
    inner = model.get_model()
    if use_cache and past_key_values is None:
        past_key_values = DynamicCache()
    past = 0 if past_key_values is None else past_key_values.get_seq_length()
    b, t, _ = inputs_embeds.shape
    device = inputs_embeds.device
    mask2d = (torch.ones(b, past + t, dtype=torch.bool, device=device) if attention_mask is None
              else attention_mask.bool().to(device))
    if position_ids is None:
        position_ids = (mask2d.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
    layers = inner.layers[: model.config.num_hidden_layers]
    prefill = past == 0
    if not prefill and state.key_masks is None:
        raise ValueError("in-decoder pruning: a decode step without its prefill (the cache was not built here)")
    hidden = inputs_embeds
    if prefill:
        return _prefill(model, fn, options, k, state, hidden, mask2d, position_ids, past_key_values, use_cache,
                        logits_to_keep, records, left_padding, layers)
    rotary = {}
    for i, layer in enumerate(layers):
        key_mask = state.key_masks[i] = torch.cat([state.key_masks[i], mask2d[:, -t:]], dim=1)
        shift = state.shifts[i]
        pos = position_ids - shift[:, None]
        key = tuple(shift.tolist())
        if key not in rotary:
            rotary[key] = inner.rotary_emb(hidden, pos)
        mask = _additive_mask(key_mask, t, hidden.dtype, causal=True) if (state.padded or t > 1) else None
        out = layer(hidden, attention_mask=mask, position_ids=pos, use_cache=use_cache,
                    position_embeddings=rotary[key], **layer_cache_kwargs(past_key_values))
        hidden = out[0] if isinstance(out, tuple) else out
    hidden = inner.norm(hidden)
    if logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    return causal_lm_output(model.lm_head(hidden), past_key_values)


def _prefill(model, fn, options, k, state, hidden, mask2d, positions, cache, use_cache, logits_to_keep, records,
             left_padding, layers):
    inner = model.get_model()
    b = hidden.shape[0]
    spans = list(state.spans)
    full_valid = mask2d.sum(dim=1)  # tokens per row in the unpruned prompt (decode positions continue from it)
    shift = torch.zeros(b, dtype=torch.long, device=hidden.device)
    origin = [None if s is None else torch.arange(s[1], device=hidden.device) for s in spans]
    log = [[] for _ in range(b)]
    embeds, initial_mask = hidden, mask2d
    previous, previous_pos, previous_mask = None, None, None
    key_masks, shifts = [], []
    padded = not bool(mask2d.all())
    rotary = inner.rotary_emb(hidden, positions)
    for i, layer in enumerate(layers):
        results = []
        for row in range(b):
            if spans[row] is None:
                results.append(None)
                continue
            valid = mask2d[row]
            offset = int(valid.long().argmax()) if bool(valid.any()) else 0
            start, length = spans[row]
            prev = None if previous is None else previous[row:row + 1, previous_mask[row]]
            prev_pos = None if previous is None else previous_pos[row:row + 1, previous_mask[row]]
            step = DecoderStep(model, i, hidden[row:row + 1, valid], prev, positions[row:row + 1, valid], prev_pos,
                               (start - offset, length), embeds[row:row + 1, initial_mask[row]])
            results.append(fn(step, k, **options))
        if any(r is not None for r in results):
            rows_h, rows_p = [], []
            for row in range(b):
                valid = mask2d[row]
                offset = int(valid.long().argmax()) if bool(valid.any()) else 0
                row_h, row_p = hidden[row, valid], positions[row, valid]
                if results[row] is None:
                    rows_h.append(row_h)
                    rows_p.append(row_p)
                    if spans[row] is not None:
                        spans[row] = (spans[row][0] - offset, spans[row][1])
                    continue
                start, length = spans[row]
                row_h, row_p, origin[row], span, renumber = _apply(results[row], row_h, row_p, origin[row],
                                                                    (start - offset, length), 0)
                if renumber:
                    shift[row] = full_valid[row] - row_h.shape[0]
                spans[row] = span
                log[row].append((i, span[1]))
                rows_h.append(row_h)
                rows_p.append(row_p)
            width = max(h.shape[0] for h in rows_h)
            hidden_new = hidden.new_zeros(b, width, hidden.shape[-1])
            pos_new = positions.new_zeros(b, width)
            mask_new = torch.zeros(b, width, dtype=torch.bool, device=hidden.device)
            for row in range(b):
                n = rows_h[row].shape[0]
                sl = slice(width - n, width) if left_padding else slice(0, n)
                hidden_new[row, sl], pos_new[row, sl], mask_new[row, sl] = rows_h[row], rows_p[row], True
                if spans[row] is not None:
                    spans[row] = (spans[row][0] + sl.start, spans[row][1])
            hidden, positions, mask2d = hidden_new, pos_new, mask_new
            padded = padded or not bool(mask2d.all())
            rotary = inner.rotary_emb(hidden, positions)
        previous, previous_pos, previous_mask = hidden, positions, mask2d  # the input of layer i, for layer i + 1
        if padded and model.config._attn_implementation == "flash_attention_2":
            raise ValueError("in-decoder pruning with flash attention needs unpadded prompts (one prompt, or "
                             "prompts of equal length); use SDPA for padded batches")
        mask = _additive_mask(mask2d, mask2d.shape[1], hidden.dtype, causal=True) if padded else None
        out = layer(hidden, attention_mask=mask, position_ids=positions, use_cache=use_cache,
                    position_embeddings=rotary, **layer_cache_kwargs(cache))
        hidden = out[0] if isinstance(out, tuple) else out
        key_masks.append(mask2d)
        shifts.append(shift.clone())
    state.key_masks, state.shifts, state.padded = key_masks, shifts, padded
    state.layer_tokens = [m.sum(dim=1) for m in key_masks]
    if records is not None:  # one record per prompt with an image: the image tokens that reach the last layer
        for row in range(b):
            if origin[row] is not None:
                kept = origin[row][origin[row] >= 0].tolist()
                records.append({"kept_indices": kept, "decoder_layers": log[row],
                                "visual_tokens_last_layer": spans[row][1]})
    hidden = inner.norm(hidden)
    if logits_to_keep:
        hidden = hidden[:, -logits_to_keep:]
    return causal_lm_output(model.lm_head(hidden), cache)

