"""The multimodal part of LLaVA: vision tower + projector + splicing image embeddings into the prompt.

The data path for one image (see DESIGN.md) reads top to bottom in `LlavaMetaForCausalLM`:

    encode_images         pixels -> tower (up to the select layer, + CLS attention row) -> projector
    select_visual_tokens  the one place where visual tokens are pruned (llava.pruning; identity when off)
                          (token-merging methods, VisionZip, go through merge_visual_tokens instead,
                          since they merge before the projector; FastV prunes in the decoder,
                          llava/model/fastv.py)
    merge_views           LLaVA-1.6 anyres: base view + tiles (+ unpadding and image_newline)
    splice_embeddings     image blocks replace IMAGE_TOKEN_INDEX, labels IGNORE_INDEX, re-pad the batch
"""
import time

import torch
import torch.nn as nn

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import get_anyres_image_grid_shape
from llava.pruning import MERGERS, PruningConfig, attention_entropy, effective_rank, prune_visual_tokens
from llava.pruning.methods import METHODS

from .multimodal_encoder.builder import build_vision_tower
from .multimodal_projector.builder import build_vision_projector


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

    # ---- step 1: pixels -> projected features (+ CLS attention row) --------------------------------
    def encode_images(self, images, output_attentions=False):
        """images [B, 3, H, W] -> [B, N, hidden] (and the CLS->patch attention [B, N], float32)."""
        out = self.get_vision_tower()(images, output_attentions=output_attentions)
        features, attention = out if output_attentions else (out, None)
        features = self.get_model().mm_projector(features)
        return (features, attention) if output_attentions else features

    # ---- step 2: pruning -----------------------------------------------------------------------------
    def set_pruning(self, cfg=None):
        """Switch visual-token pruning at run time (a PruningConfig, its dict form, or None for off)."""
        if isinstance(cfg, dict):
            cfg = PruningConfig.from_dict(cfg)
        cfg = (cfg or PruningConfig()).validate()
        if cfg.is_active and METHODS[cfg.method].in_llm:
            n_layers = self.config.num_hidden_layers
            if not 1 <= cfg.fastv_layer < n_layers:
                raise ValueError(f"--fastv-layer must be in [1, {n_layers - 1}] for this model, got {cfg.fastv_layer}")
            if self.config._attn_implementation not in ("sdpa", "flash_attention_2"):
                raise ValueError(f"--pruning-method {cfg.method} needs SDPA or flash attention, "
                                 f"not {self.config._attn_implementation!r}")
        self.pruning = cfg
        self._image_span = None
        self.pruning_records = []  # per-image statistics when cfg.pruning_stats
        return self

    @property
    def pruning_config(self):
        return getattr(self, "pruning", None) or PruningConfig()

    def _needs_attention(self):
        cfg = self.pruning_config
        return (cfg.needs_attention and not METHODS[cfg.method].merges) or cfg.pruning_stats

    def _prunes_visual_tokens(self):
        """A method that selects among the projected visual tokens is on."""
        cfg = self.pruning_config
        return cfg.is_active and not METHODS[cfg.method].in_llm and not METHODS[cfg.method].merges

    def _merges_visual_tokens(self):
        """A token-merging method is on and has fewer tokens to produce than the tower gives."""
        cfg = self.pruning_config
        return cfg.is_active and METHODS[cfg.method].merges and cfg.visual_token_num < self.get_vision_tower().num_patches

    def merge_visual_tokens(self, views):
        """Token-merging methods (VisionZip): pixels [V, 3, H, W] -> [V, K, hidden]. They merge the
        tower's select-layer states before the projector, so they are called here instead of
        `select_visual_tokens`; K counts VisionZip's CLS token."""
        cfg = self.pruning_config
        projector = self.get_model().mm_projector
        hidden, attention, keys = self.get_vision_tower().forward_for_merging(views)
        start = time.perf_counter()
        merged = projector(MERGERS[cfg.method](hidden, attention, keys, cfg.visual_token_num))
        if cfg.pruning_stats:
            with torch.no_grad():
                self._record_stats(projector(hidden[:, 1:]), attention, merged, None, start)
        return merged

    def select_visual_tokens(self, features, attention):
        """features [V, N, hidden] (the views of one image, or a batch of single-view images), attention
        [V, N] or None -> ([V, K, hidden], kept indices [V, K] or None when nothing was pruned).

        The single place where visual-token pruning happens: it calls llava.pruning. Without a pruning
        method (or with fastv, which prunes inside the decoder), or when K >= N, the features pass
        through untouched, so outputs are bit-identical to the unpruned model.
        """
        cfg = self.pruning_config
        if not self._prunes_visual_tokens():
            if cfg.pruning_stats and not cfg.is_active:  # unpruned: the statistics of all the tokens
                every = torch.arange(features.shape[1], device=features.device).expand(features.shape[0], -1)
                self._record_stats(features, attention, features, every, time.perf_counter())
            return features, None
        start = time.perf_counter()
        kept, idx = prune_visual_tokens(cfg.method, features, attention, cfg.visual_token_num, **cfg.options())
        if cfg.pruning_stats:
            self._record_stats(features, attention, kept, idx, start)
        return (features, None) if idx.shape[1] == features.shape[1] else (kept, idx)

    @torch.no_grad()
    def _record_stats(self, features, attention, kept, idx, start):
        """One record per view/image: erank of all and of kept tokens, attention entropy, kept indices
        (None for merged tokens) and the pruning time since `start`."""
        if features.is_cuda:
            torch.cuda.synchronize(features.device)
        elapsed = (time.perf_counter() - start) / features.shape[0]
        for i in range(features.shape[0]):
            self.pruning_records.append({
                "erank_all": float(effective_rank(features[i])),
                "erank_kept": float(effective_rank(kept[i])),
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

    def image_blocks_anyres(self, features, attention, image_size):
        """One image's views [V, N, hidden] -> its visual embeddings [T, hidden], pruned per the scope."""
        if not self._prunes_visual_tokens():
            self.select_visual_tokens(features, attention)  # (statistics per view, when asked for)
            return self.merge_views(features, image_size)
        if self.pruning_config.budget_scope == "global":  # K over the merged sequence (newlines included)
            merged = self.merge_views(features, image_size)
            merged_attn = None
            if attention is not None:
                merged_attn = self.merge_views(attention[..., None], image_size, attention.new_zeros(1))[None, :, 0]
            return self.select_visual_tokens(merged[None], merged_attn)[0][0]
        kept, idx = self.select_visual_tokens(features, attention)
        return self.merge_views(features, image_size) if idx is None else self.stitch_kept_views(kept, idx, image_size)

    def image_embeddings(self, images, image_sizes=None):
        """Pixels of a batch of images -> a list with one [T_i, hidden] block per image."""
        output_attentions = self._needs_attention()
        if isinstance(images, list) or images.ndim == 5:  # views per image (anyres) or ragged list
            views = [img if img.ndim == 4 else img.unsqueeze(0) for img in images]
            counts = [v.shape[0] for v in views]
            sizes = image_sizes if image_sizes is not None else [None] * len(counts)
            if self._merges_visual_tokens():
                if self.pruning_config.budget_scope != "per-view":
                    raise ValueError(f"--pruning-method {self.pruning_config.method} supports --budget-scope per-view only")
                merged = torch.split(self.merge_visual_tokens(torch.cat(views, dim=0)), counts, dim=0)
                return [m.flatten(0, 1) for m in merged]  # K per view, base view first
            encoded = self.encode_images(torch.cat(views, dim=0), output_attentions)
            features, attention = encoded if output_attentions else (encoded, None)
            per_image = torch.split(features, counts, dim=0)
            per_attn = [None] * len(counts) if attention is None else torch.split(attention, counts, dim=0)
            return [self.image_blocks_anyres(f, a, size) for f, a, size in zip(per_image, per_attn, sizes)]
        if self._merges_visual_tokens():
            return list(self.merge_visual_tokens(images))
        encoded = self.encode_images(images, output_attentions)
        features, attention = encoded if output_attentions else (encoded, None)
        return list(self.select_visual_tokens(features, attention)[0])

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
        embeds, new_labels = self.splice_embeddings(input_ids, attention_mask, labels, image_blocks)
        self._image_span = None
        if self._prunes_in_llm():
            span = self._single_image_span(input_ids, attention_mask, image_blocks)
            self._image_span = span if self.pruning_config.visual_token_num < span[1] else None
        return self.pad_batch(embeds, new_labels, position_ids, attention_mask, past_key_values, labels)

    def _prunes_in_llm(self):
        cfg = self.pruning_config
        return cfg.is_active and METHODS[cfg.method].in_llm

    def _fastv_pending(self):
        """FastV is on and the current prompt's image has more tokens than K."""
        return self._prunes_in_llm() and getattr(self, "_image_span", None) is not None

    @staticmethod
    def _single_image_span(input_ids, attention_mask, image_blocks):
        """(start, length) of the image block in the spliced prompt; FastV needs it the same in every row."""
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("fastv needs unpadded prompts (one prompt, or prompts of equal length)")
        starts = [(row == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist() for row in input_ids]
        if any(len(s) != 1 for s in starts) or len({s[0] for s in starts}) != 1 \
                or len({b.shape[0] for b in image_blocks}) != 1:
            raise ValueError("fastv needs exactly one image per prompt, at the same position in every row")
        return starts[0][0], image_blocks[0].shape[0]

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
