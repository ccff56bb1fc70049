"""The multimodal part of LLaVA: vision tower + projector + splicing image embeddings into the prompt.

The data path for one image reads top to bottom in `LlavaMetaForCausalLM`, as public steps:

    encode_visual          pixels -> tower (up to the select layer) -> VisualInputs: states, the CLS attention
                           row and the extra signals the active method declares, projected features
    prune_visual_features  the one place where visual tokens are cut before the LLM (llava.pruning): a
                           post-projector method selects projected tokens, a pre-projector one builds tokens
                           from the states and projects them; identity when off or when K >= N
    reduce_visual          per image: the steps above per view, LLaVA-1.6 views merged (merge_views)
    embed_prompt           image blocks replace IMAGE_TOKEN_INDEX, labels IGNORE_INDEX, re-pad the batch
    (in-decoder methods)   llava/model/decoder_pruning.py cuts inside the LLM, from the spans recorded here
"""
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import get_anyres_image_grid_shape
from llava.pruning import PruningConfig, attention_entropy, effective_rank, prune_visual_tokens

from .decoder_pruning import DecoderPruningState

from .multimodal_encoder.builder import build_vision_tower
from .multimodal_projector.builder import build_vision_projector


@dataclass
class VisualInputs:
    """What step 1 hands to the pruning step, for all views: states [V, N, C] the tower's select-layer features
    (pre-projector), attention [V, N] the CLS->patch row or None, signals {name: tensor} the extra inputs the
    active method declares (see CLIPVisionTower.encode), features [V, N, hidden] projected (None for a
    pre-projector method that builds its own tokens)."""

    states: torch.Tensor
    attention: Optional[torch.Tensor]
    signals: dict
    features: Optional[torch.Tensor]

    def rows(self, rows):
        """The same inputs for views `rows` (a slice)."""
        def cut(value):
            if isinstance(value, tuple):
                return tuple(cut(v) for v in value)
            return value[rows] if isinstance(value, torch.Tensor) else value

        return VisualInputs(cut(self.states), cut(self.attention), {k: cut(v) for k, v in self.signals.items()},
                            cut(self.features))


class LlavaMetaModel:
    """Mixed into the inner decoder model (`LlavaLlamaModel`): owns tower, projector, image_newline."""

    def __init__(self, config):
        super().__init__(config)
        if hasattr(config, "mm_vision_tower"):
            self.vision_tower = build_vision_tower(config, delay_load=True)
            self.mm_projector = build_vision_projector(config)
            if "unpad" in getattr(config, "mm_patch_merge_type", ""):
                self.image_newline = nn.Parameter(torch.empty(config.hidden_size, dtype=self.dtype))

    def get_vision_tower(self):
        vision_tower = getattr(self, "vision_tower", None)
        if isinstance(vision_tower, list):  # FSDP keeps it in a list
            vision_tower = vision_tower[0]
        return vision_tower


def unpad_image(tensor, original_size):
    """Crop the padding that resize-and-pad added. tensor [C, H, W]; original_size (width, height)."""
    original_width, original_height = original_size
    current_height, current_width = tensor.shape[1:]
    if original_width / original_height > current_width / current_height:
        new_height = int(original_height * (current_width / original_width))
        padding = (current_height - new_height) // 2
        return tensor[:, padding : current_height - padding, :]
    new_width = int(original_width * (current_height / original_height))
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding : current_width - padding]


class LlavaMetaForCausalLM:
    """Mixed into `LlavaLlamaForCausalLM` / `LlavaMistralForCausalLM`."""

    def get_model(self):
        return self.model

    def get_vision_tower(self):
        return self.get_model().get_vision_tower()

    # ---- step 1: pixels -> what the active pruning method reads ------------------------------------
    def encode_images(self, images, output_attentions=False):
        """images [B, 3, H, W] -> [B, N, hidden] (and the CLS->patch attention [B, N], float32)."""
        out = self.get_vision_tower()(images, output_attentions=output_attentions)
        features, attention = out if output_attentions else (out, None)
        features = self.get_model().mm_projector(features)
        return (features, attention) if output_attentions else features

    def encode_visual(self, views):
        """Pixels of all views [V, 3, H, W] -> VisualInputs: the tower's select-layer states, the CLS attention
        row when the method (or --pruning-stats) reads it, the extra signals the method declares, and the
        projected features (not for a pre-projector method, which builds its tokens before the projector)."""
        cfg = self.pruning_config
        spec = cfg.spec
        want_attention = spec.needs_attention or cfg.pruning_stats
        states, attention, signals = self.get_vision_tower().encode(views, attention=want_attention,
                                                                  signals=spec.inputs if cfg.is_active else ())
        builds_tokens = cfg.stage == "pre-projector" and (cfg.visual_token_num is None
                                                          or cfg.visual_token_num < states.shape[1])
        features = None if builds_tokens else self.get_model().mm_projector(states)
        return VisualInputs(states, attention, signals, features)

    # ---- step 2: pruning before the LLM --------------------------------------------------------------
    def set_pruning(self, cfg=None):
        """Switch visual-token pruning at run time (a PruningConfig, its dict form, or None for off)."""
        if isinstance(cfg, dict):
            cfg = PruningConfig.from_dict(cfg)
        cfg = (cfg or PruningConfig()).validate()
        if cfg.stage == "decoder":
            n_layers = self.config.num_hidden_layers
            for option in cfg.spec.options:
                if option.decoder_layer:
                    value = getattr(cfg, option.name)
                    low, high = (0, n_layers - 2) if option.decoder_layer == "output" else (1, n_layers - 1)
                    for layer in ((value,) if isinstance(value, int) else value or ()):
                        if not low <= layer <= high:
                            raise ValueError(f"{option.flag_name} must be in [{low}, {high}] for this model "
                                             f"({n_layers} decoder layers), got {layer}")
            if self.config._attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
                raise ValueError(f"--pruning-method {cfg.method} needs SDPA, eager or flash attention, "
                                 f"not {self.config._attn_implementation!r}")
        if cfg.stage == "pre-projector" and cfg.budget_scope != "per-view":
            raise ValueError(f"--pruning-method {cfg.method} supports --budget-scope per-view only")
        self.pruning = cfg
        self._decoder_pruning = None
        self.pruning_records = []  # per-image statistics when cfg.pruning_stats
        return self

    @property
    def pruning_config(self):
        return getattr(self, "pruning", None) or PruningConfig()

    def prune_visual_features(self, visual, rows):
        """Views `rows` of `visual` (one image's views, or a batch of single-view images) -> ([V, K, hidden],
        kept indices [V, K'] or None when nothing was pruned). The one place where visual tokens are cut before
        the LLM: post-projector methods select among the projected features, pre-projector methods build
        their tokens from the tower's states and project them. Without a method acting here (none, or an
        in-decoder one), or when K >= N, the features pass through untouched, so outputs are bit-identical
        to the unpruned model."""
        cfg = self.pruning_config
        part = visual.rows(rows)
        n = part.states.shape[1]
        acts = cfg.stage in ("pre-projector", "post-projector") and (cfg.visual_token_num is None
                                                                    or cfg.visual_token_num < n)
        if not acts:
            features = part.features if part.features is not None else self.get_model().mm_projector(part.states)
            if cfg.pruning_stats and cfg.stage in ("none", "decoder") and not cfg.is_active:
                every = torch.arange(n, device=features.device).expand(features.shape[0], -1)
                self._record_stats(features, part.attention, features, every, time.perf_counter())
            return features, None
        start = time.perf_counter()
        if cfg.stage == "pre-projector":
            tokens, idx = prune_visual_tokens(cfg.method, part.states, part.attention, cfg.visual_token_num,
                                              **part.signals, **cfg.options())
            projector = self.get_model().mm_projector
            kept = [projector(t) for t in tokens] if isinstance(tokens, list) else projector(tokens)
            if cfg.pruning_stats:
                with torch.no_grad():
                    self._record_stats(projector(part.states), part.attention, kept, idx, start)
            return kept, idx
        kept, idx = prune_visual_tokens(cfg.method, part.features, part.attention, cfg.visual_token_num,
                                        **part.signals, **cfg.options())
        if cfg.pruning_stats:
            self._record_stats(part.features, part.attention, kept, idx, start)
        return (part.features, None) if idx.shape[1] == part.features.shape[1] else (kept, idx)

    @torch.no_grad()
    def _record_stats(self, features, attention, kept, idx, start):
        """One record per view/image: erank of all and of kept tokens, attention entropy, kept indices
        (None for merged tokens) and the pruning time since `start`."""
        if features.is_cuda:
            torch.cuda.synchronize(features.device)
        elapsed = (time.perf_counter() - start) / features.shape[0]
        for i in range(features.shape[0]):
            kept_i = kept[i]
            self.pruning_records.append({
                "erank_all": float(effective_rank(features[i])),
                "erank_kept": float(effective_rank(kept_i)) if kept_i.shape[0] > 1 else None,
                "attention_entropy": None if attention is None else float(attention_entropy(attention[i])),
                "kept_indices": None if idx is None else idx[i].tolist(),
                "pruning_time_s": elapsed,
            })

    # ---- step 3: LLaVA-1.6 views -> one sequence per image ------------------------------------------
    def _grid(self, image_size):
        config = self.config
        if getattr(config, "image_aspect_ratio", None) != "anyres":
            raise NotImplementedError("spatial merge needs image_aspect_ratio='anyres'")
        return get_anyres_image_grid_shape(image_size, config.image_grid_pinpoints,
                                           self.get_vision_tower().config.image_size)

    def merge_views(self, features, image_size, newline=None):
        """features [V, N, C] (view 0 = base, then tiles in row-major order) -> [T, C].

        `newline` is the vector closing each row with spatial_unpad (default: the model's image_newline;
        the attention row is merged the same way with a zero there)."""
        merge_type = getattr(self.config, "mm_patch_merge_type", "flat")
        if merge_type == "flat":
            return features.flatten(0, 1)
        if not merge_type.startswith("spatial"):
            raise ValueError(f"Unexpected mm_patch_merge_type: {merge_type!r}")
        if "unpad" in merge_type and newline is None:
            newline = self.get_model().image_newline
        elif "unpad" not in merge_type:
            newline = None
        base = features[0]
        if features.shape[0] == 1:
            return base if newline is None else torch.cat((base, newline[None].to(base)), dim=0)
        side = self.get_vision_tower().num_patches_per_side
        if side * side != base.shape[0]:
            raise ValueError(f"base view has {base.shape[0]} tokens, expected {side}x{side}")
        grid_w, grid_h = self._grid(image_size)
        tiles = features[1:].view(grid_h, grid_w, side, side, -1)
        if newline is None:  # plain raster order over the stitched map
            merged = tiles.permute(0, 2, 1, 3, 4).contiguous().flatten(0, 3)
        else:
            fmap = tiles.permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)  # [C, H, W]
            fmap = unpad_image(fmap, image_size)
            column = newline[:, None, None].expand(*fmap.shape[:-1], 1).to(fmap)
            merged = torch.cat((fmap, column), dim=-1).flatten(1, 2).transpose(0, 1)
        return torch.cat((base, merged), dim=0)

    def stitch_kept_views(self, kept, idx, image_size):
        """Per-view pruning: the base view's kept tokens, then every tile's kept tokens in raster order
        over the stitched grid. No unpadding and no image_newline: with K tokens per view the grid is
        no longer complete (FasterVLM and VisPruner lay LLaVA-1.6 out the same way)."""
        if kept.shape[0] == 1:
            return kept[0]
        side = self.get_vision_tower().num_patches_per_side
        grid_w, _ = self._grid(image_size)
        tile = torch.arange(kept.shape[0] - 1, device=idx.device)[:, None]
        row = (tile // grid_w) * side + idx[1:] // side
        col = (tile % grid_w) * side + idx[1:] % side
        order = (row * grid_w * side + col).flatten().argsort()
        return torch.cat((kept[0], kept[1:].flatten(0, 1)[order]), dim=0)

    def image_blocks_anyres(self, visual, rows, image_size):
        """One image's views (rows of `visual`) -> its visual embeddings [T, hidden], pruned per the scope."""
        cfg = self.pruning_config
        part = visual.rows(rows)
        if cfg.stage not in ("pre-projector", "post-projector") or (
                cfg.visual_token_num is not None and cfg.visual_token_num >= part.states.shape[1]):
            features, _ = self.prune_visual_features(visual, rows)  # (statistics per view, when asked for)
            return self.merge_views(features, image_size)
        if cfg.budget_scope == "global":  # K over the merged sequence (newlines included)
            merged = self.merge_views(part.features, image_size)
            merged_attn = None
            if part.attention is not None:
                merged_attn = self.merge_views(part.attention[..., None], image_size,
                                               part.attention.new_zeros(1))[None, :, 0]
            signals = {}
            for name, value in part.signals.items():
                if name not in ("states", "keys"):
                    raise ValueError(f"--pruning-method {cfg.method} reads {name}, which has no merged form: use "
                                     f"--budget-scope per-view")
                signals[name] = self.merge_views(value, image_size, value.new_zeros(value.shape[-1]))[None]
            whole = VisualInputs(merged[None], merged_attn, signals, merged[None])
            return self.prune_visual_features(whole, slice(None))[0][0]
        kept, idx = self.prune_visual_features(visual, rows)
        if isinstance(kept, list):  # a method that decides its own count per view: base view first, then tiles
            return torch.cat(kept, dim=0)
        if cfg.stage == "pre-projector":  # K built tokens per view, base view first
            return kept.flatten(0, 1)
        return self.merge_views(kept, image_size) if idx is None else self.stitch_kept_views(kept, idx, image_size)

    def reduce_visual(self, visual, counts, image_sizes=None, anyres=False):
        """VisualInputs of all views + views per image -> one [T_i, hidden] block per image (pruned before the
        LLM as configured; LLaVA-1.6 views merged)."""
        if anyres:
            sizes = image_sizes if image_sizes is not None else [None] * len(counts)
            bounds = [0]
            for c in counts:
                bounds.append(bounds[-1] + c)
            return [self.image_blocks_anyres(visual, slice(bounds[i], bounds[i + 1]), sizes[i])
                    for i in range(len(counts))]
        kept, _ = self.prune_visual_features(visual, slice(None))
        return list(kept)

    def image_embeddings(self, images, image_sizes=None):
        """Pixels of a batch of images -> a list with one [T_i, hidden] block per image (steps 1-3)."""
        if isinstance(images, list) or images.ndim == 5:  # views per image (anyres) or ragged list
            views = [img if img.ndim == 4 else img.unsqueeze(0) for img in images]
            counts = [v.shape[0] for v in views]
            return self.reduce_visual(self.encode_visual(torch.cat(views, dim=0)), counts, image_sizes, anyres=True)
        return self.reduce_visual(self.encode_visual(images), [1] * images.shape[0])

    # ---- step 4: splice image blocks into the token embeddings -------------------------------------
    def prepare_inputs_labels_for_multimodal(
        self, input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None
    ):
        """Upstream signature and return value:
        (None, position_ids, attention_mask, past_key_values, inputs_embeds, labels)."""
        vision_tower = self.get_vision_tower()
        if vision_tower is None or images is None or input_ids.shape[1] == 1:
            return input_ids, position_ids, attention_mask, past_key_values, None, labels
        if getattr(self.config, "tune_mm_mlp_adapter", False) and getattr(self.config, "mm_use_im_start_end", False):
            raise NotImplementedError("tune_mm_mlp_adapter with mm_use_im_start_end is not supported")
        image_blocks = self.image_embeddings(images, image_sizes)
        return self.embed_prompt(input_ids, attention_mask, labels, image_blocks, position_ids, past_key_values)

    def embed_prompt(self, input_ids, attention_mask, labels, image_blocks, position_ids=None, past_key_values=None):
        """Step 4: splice the image blocks into the prompts and re-pad (prepare_inputs_labels_for_multimodal's
        return value); with an in-decoder method, also records each prompt's image span for the decoder hook."""
        embeds, new_labels = self.splice_embeddings(input_ids, attention_mask, labels, image_blocks)
        out = self.pad_batch(embeds, new_labels, position_ids, attention_mask, past_key_values, labels)
        self._decoder_pruning = None
        if self.pruning_config.stage == "decoder":
            self._decoder_pruning = DecoderPruningState(self._image_spans(input_ids, attention_mask, image_blocks,
                                                                          out[4].shape[1]))
        return out

    def decoder_pruning_pending(self):
        """An in-decoder method is on and the current prompt has an image to prune."""
        state = getattr(self, "_decoder_pruning", None)
        return state is not None and any(s is not None for s in state.spans)

    def _image_spans(self, input_ids, attention_mask, image_blocks, padded_len):
        """Per row, (start, length) of its image block in the padded, spliced prompt, or None without an image.
        In-decoder methods take one image per prompt."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        left = getattr(self.config, "tokenizer_padding_side", "right") == "left"
        spans, blocks = [], iter(image_blocks)
        for ids, mask in zip(input_ids, attention_mask.bool()):
            ids = ids[mask]
            where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            if len(where) > 1:
                raise ValueError(f"--pruning-method {self.pruning_config.method} prunes inside the LLM and takes "
                                 f"one image per prompt, got {len(where)}")
            block = next(blocks, None)
            if not where:
                spans.append(None)
                continue
            k = self.pruning_config.visual_token_num
            if k is not None and k >= block.shape[0]:  # nothing to prune: the stock decoder runs
                spans.append(None)
                continue
            total = ids.shape[0] - 1 + block.shape[0]
            offset = padded_len - total if left else 0
            spans.append((offset + where[0], block.shape[0]))
        return spans

    def splice_embeddings(self, input_ids, attention_mask, labels, image_blocks):
        """Per row: drop padding, embed the text, put the next image block at each IMAGE_TOKEN_INDEX.
        Images are consumed in order across the batch. Returns lists of [L_i, hidden] and [L_i]."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        if labels is None:
            labels = torch.full_like(input_ids, IGNORE_INDEX)
        embed_tokens = self.get_model().embed_tokens
        image_iter = iter(image_blocks)
        all_embeds, all_labels = [], []
        for ids, row_labels, mask in zip(input_ids, labels, attention_mask.bool()):
            ids, row_labels = ids[mask], row_labels[mask]
            image_positions = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
            bounds = [-1] + image_positions + [ids.shape[0]]
            text_ids = [ids[bounds[j] + 1 : bounds[j + 1]] for j in range(len(bounds) - 1)]
            text_labels = [row_labels[bounds[j] + 1 : bounds[j + 1]] for j in range(len(bounds) - 1)]
            text_embeds = torch.split(embed_tokens(torch.cat(text_ids)), [len(t) for t in text_ids], dim=0)
            pieces, piece_labels = [text_embeds[0]], [text_labels[0]]
            for j in range(1, len(text_embeds)):
                block = next(image_iter, None)
                if block is None:
                    raise ValueError("The prompts contain more <image> tokens than images were given")
                pieces += [block.to(text_embeds[0].dtype), text_embeds[j]]
                block_labels = torch.full((block.shape[0],), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
                piece_labels += [block_labels, text_labels[j]]
            if not image_positions:
                # A text-only row in a multimodal batch consumes its (dummy) image with zero length,
                # as upstream does, which keeps the autograd graph identical across ranks.
                block = next(image_iter, None)
                if block is not None:
                    pieces.append(block[:0].to(text_embeds[0].dtype))
            all_embeds.append(torch.cat(pieces, dim=0))
            all_labels.append(torch.cat(piece_labels, dim=0))
        return all_embeds, all_labels

    def pad_batch(self, embeds, labels, position_ids, attention_mask, past_key_values, orig_labels):
        """Truncate to tokenizer_model_max_length, re-pad (side from config) with zero embeddings."""
        max_len_cfg = getattr(self.config, "tokenizer_model_max_length", None)
        if max_len_cfg is not None:
            embeds = [e[:max_len_cfg] for e in embeds]
            labels = [lab[:max_len_cfg] for lab in labels]
        batch, max_len = len(embeds), max(e.shape[0] for e in embeds)
        hidden, dtype, device = embeds[0].shape[1], embeds[0].dtype, embeds[0].device
        out_embeds = torch.zeros(batch, max_len, hidden, dtype=dtype, device=device)
        out_labels = torch.full((batch, max_len), IGNORE_INDEX, dtype=labels[0].dtype, device=device)
        out_mask = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        out_pos = torch.zeros(batch, max_len, dtype=torch.long, device=device)
        left = getattr(self.config, "tokenizer_padding_side", "right") == "left"
        for i, (e, lab) in enumerate(zip(embeds, labels)):
            n = e.shape[0]
            span = slice(max_len - n, max_len) if left else slice(0, n)
            out_embeds[i, span], out_labels[i, span], out_mask[i, span] = e, lab, True
            out_pos[i, span] = torch.arange(n, device=device)
        return (
            None,
            None if position_ids is None else out_pos,
            None if attention_mask is None else out_mask.to(attention_mask.dtype),
            past_key_values,
            out_embeds,
            None if orig_labels is None else out_labels,
        )

    # ---- training helper (upstream name) -----------------------------------------------------------
    def initialize_vision_tokenizer(self, model_args, tokenizer):
        from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN

        if model_args.mm_use_im_patch_token:
            tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
            self.resize_token_embeddings(len(tokenizer))
        if model_args.mm_use_im_start_end:
            added = tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
            self.resize_token_embeddings(len(tokenizer))
            if added > 0:
                inp = self.get_input_embeddings().weight.data
                out = self.get_output_embeddings().weight.data
                inp[-added:] = inp[:-added].mean(dim=0, keepdim=True)
                out[-added:] = out[:-added].mean(dim=0, keepdim=True)
