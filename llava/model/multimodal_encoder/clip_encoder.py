"""CLIP vision tower that stops at the select layer and can return the CLS->patch attention row.

Upstream runs the whole tower with `output_hidden_states=True` and keeps `hidden_states[select_layer]`;
the layers after it run for nothing. Here the encoder layers are run one by one and the loop stops at
the select layer. Attention-based pruning needs the CLS query's attention over the patches *of that
same layer*; it is computed from that layer's own q/k projections (one 1 x 577 row per head), so the
tower keeps its fast attention kernel and no attention map is ever materialised.
"""
import inspect
import os

import torch
import torch.nn as nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.utils import progress_bars


class VisionTowerNotFoundError(FileNotFoundError):
    """The checkpoint's `mm_vision_tower` is neither a local folder nor in the Hugging Face cache."""


def resolve_vision_tower(name, given_by=None):
    """Local folder for `name`: the folder itself, or its snapshot in the user's Hugging Face cache.

    Nothing is downloaded: a missing tower raises one clear error saying what to fetch and where.
    `given_by`: the flag that named it (default: the checkpoint's config key mm_vision_tower).
    """
    if os.path.isdir(name):
        return name
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:
        pass
    if given_by is not None:
        raise VisionTowerNotFoundError(f"Vision tower {name!r} ({given_by}) was not found: it is neither a local "
                                       f"folder nor in the Hugging Face cache")
    raise VisionTowerNotFoundError(
        f"Vision tower {name!r} (config key mm_vision_tower) was not found: it is neither a local folder "
        f"nor in the Hugging Face cache. Download it once, e.g. `hf download {name}` (it goes to the "
        f"Hugging Face cache, HF_HOME/HF_HUB_CACHE), or put the model in a folder and pass "
        f"`vision_tower=<folder>` to load_pretrained_model (CLI: --vision-tower <folder>), or set "
        f"mm_vision_tower in the checkpoint's config.json to that folder."
    )


def image_processor_class():
    """The PIL/numpy CLIP image processor class (upstream's numeric pipeline), never the torchvision one."""
    try:
        from transformers import CLIPImageProcessorPil as processor_cls
    except ImportError:  # older transformers 5.x: CLIPImageProcessor is the PIL/numpy processor
        from transformers import CLIPImageProcessor as processor_cls
    return processor_cls


def load_image_processor(path):
    """The PIL/numpy CLIP image processor saved in `path`."""
    return image_processor_class().from_pretrained(path)


def cls_attention_row(attn, queries, keys):
    """Head-averaged attention of the CLS query over the patch keys of one CLIP attention module.

    queries, keys: [B, 1+N, C], the outputs of attn.q_proj / attn.k_proj (before any scaling).
    Returns [B, N] float32 (softmax over all 1+N keys, CLS column dropped, not renormalised).
    """
    b, t, _ = keys.shape
    h, d = attn.num_heads, attn.head_dim
    q = queries[:, :1].reshape(b, 1, h, d).transpose(1, 2).float()  # [B, H, 1, d]
    k = keys.reshape(b, t, h, d).transpose(1, 2).float()  # [B, H, T, d]
    scores = (q @ k.transpose(-1, -2)).squeeze(2) * attn.scale  # [B, H, T]
    return scores.softmax(dim=-1).mean(dim=1)[:, 1:]


def run_capturing_qk(layer, hidden, layer_kwargs):
    """Run one encoder layer and keep its own q/k projections (so the CLS row costs no extra matmul)."""
    captured = {}
    hooks = [layer.self_attn.q_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o)),
             layer.self_attn.k_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o))]
    try:
        out = layer(hidden, **layer_kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return out, captured["q"], captured["k"]


class CLIPVisionTower(nn.Module):
    def __init__(self, vision_tower, args, delay_load=False):
        super().__init__()
        self.is_loaded = False
        self.vision_tower_name = vision_tower
        self.select_layer = args.mm_vision_select_layer
        self.select_feature = getattr(args, "mm_vision_select_feature", "patch")
        self._cfg_only = None
        if not delay_load:
            self.load_model()
        elif getattr(args, "unfreeze_mm_vision_tower", False):
            # The tower's weights are in the checkpoint: build the module so they load into it.
            cfg = CLIPVisionConfig.from_pretrained(resolve_vision_tower(vision_tower))
            self.vision_tower = CLIPVisionModel(cfg)
            self.image_processor = load_image_processor(resolve_vision_tower(vision_tower))
            self.is_loaded = True

    def load_model(self, device_map=None):
        if self.is_loaded:
            return
        path = resolve_vision_tower(self.vision_tower_name)
        self.image_processor = load_image_processor(path)
        kwargs = {} if device_map in (None, "auto") else {"device_map": device_map}
        with progress_bars(False):  # one weight file: no bar
            self.vision_tower = CLIPVisionModel.from_pretrained(path, **kwargs)
        self.vision_tower.requires_grad_(False)
        self.is_loaded = True

    # ---- running the tower up to the select layer -------------------------------------------------
    def _vision_model(self):
        # transformers < 5.2x wraps the transformer in `.vision_model`; newer versions do not
        return getattr(self.vision_tower, "vision_model", self.vision_tower)

    def _num_layers_to_run(self):
        n = len(self._vision_model().encoder.layers)
        return self.select_layer % (n + 1)  # hidden_states[i] is the output after i layers

    @staticmethod
    def _layer_kwargs(layer):
        kwargs = {"attention_mask": None}
        if "causal_attention_mask" in inspect.signature(layer.forward).parameters:  # older signature
            kwargs["causal_attention_mask"] = None
        return kwargs

    def _run(self, pixels, capture_qk, last_input=False):
        """All 1+N tokens after the select layer, that layer's (attention module, q, k) if asked, and with
        last_input the input of the tower's last layer (running layers past the select layer if needed)."""
        vm = self._vision_model()
        hidden = vm.pre_layrnorm(vm.embeddings(pixels))
        n_run = self._num_layers_to_run()
        n_layers = len(vm.encoder.layers)
        if capture_qk and n_run == 0:
            raise ValueError("mm_vision_select_layer selects the embeddings: there is no attention to return")
        qk, layer_kwargs = None, self._layer_kwargs(vm.encoder.layers[0])
        selected, last = None, None
        for i, layer in enumerate(vm.encoder.layers[: max(n_run, n_layers - 1 if last_input else 0)]):
            if last_input and i == n_layers - 1:
                last = hidden
            if capture_qk and i == n_run - 1:
                out, q, k = run_capturing_qk(layer, hidden, layer_kwargs)
                qk = (layer.self_attn, q, k)
            else:
                out = layer(hidden, **layer_kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
            if i == n_run - 1:
                selected = hidden
        if selected is None:
            selected = hidden
        if last_input and last is None:
            last = hidden  # the loop stopped right before the last layer
        return (selected, qk, last) if last_input else (selected, qk)

    def _encode(self, pixels, output_attentions):
        hidden, qk = self._run(pixels, output_attentions)
        attention = None if qk is None else cls_attention_row(*qk)
        return self._select(hidden), attention

    def _select(self, hidden):
        if self.select_feature == "patch":
            return hidden[:, 1:]
        if self.select_feature != "cls_patch":
            raise ValueError(f"Unexpected select feature: {self.select_feature!r} (config mm_vision_select_feature)")
        return hidden

    SIGNALS = ("cls_state", "keys", "patch_attention", "select_qk", "last_qk", "states")

    @torch.no_grad()
    def encode(self, images, attention=False, signals=()):
        """The tower's part of the visual path: images [B, 3, H, W] -> (features [B, N, C] in the input dtype,
        CLS->patch attention [B, N] float32 or None, {signal: tensor} for the signals asked for):
        cls_state [B, C] the select layer's CLS state; keys [B, N, head_dim] its patch keys averaged over heads
        (float32); patch_attention [B, N, N] its head-averaged patch->patch softmax attention (over all 1+N
        keys, CLS row and column dropped, float32); select_qk (q, k, num_heads): the select layer's own q/k
        projections [B, 1+N, C] (unscaled, CLS first); last_qk (q, k, num_heads): the tower's last layer's q/k
        projections [B, 1+N, C] on its layer-normed input; states: the features themselves."""
        unknown = set(signals) - set(self.SIGNALS)
        if unknown:
            raise ValueError(f"unknown tower signals {sorted(unknown)}; known: {', '.join(self.SIGNALS)}")
        pixels = images.to(device=self.device, dtype=self.dtype)
        need_qk = attention or bool({"keys", "patch_attention", "select_qk"} & set(signals))
        hidden, qk, last = self._run(pixels, need_qk, last_input=True) if "last_qk" in signals \
            else self._run(pixels, need_qk) + (None,)
        out = {}
        if qk is not None:
            attn, q, k = qk
            b, t, _ = k.shape
            if "keys" in signals:
                out["keys"] = k.reshape(b, t, attn.num_heads, attn.head_dim).float().mean(dim=2)[:, 1:]
            if "select_qk" in signals:
                out["select_qk"] = (q, k, attn.num_heads)
            if "patch_attention" in signals:
                qh = q.reshape(b, t, attn.num_heads, attn.head_dim).transpose(1, 2).float()
                kh = k.reshape(b, t, attn.num_heads, attn.head_dim).transpose(1, 2).float()
                probs = ((qh @ kh.transpose(-1, -2)) * attn.scale).softmax(dim=-1).mean(dim=1)
                out["patch_attention"] = probs[:, 1:, 1:]
        if "cls_state" in signals:
            out["cls_state"] = hidden[:, 0].to(images.dtype)
        if "last_qk" in signals:
            layer = self._vision_model().encoder.layers[-1]
            normed = layer.layer_norm1(last)
            out["last_qk"] = (layer.self_attn.q_proj(normed), layer.self_attn.k_proj(normed), layer.self_attn.num_heads)
        features = self._select(hidden).to(images.dtype)
        if "states" in signals:
            out["states"] = features
        return features, (None if qk is None or not attention else cls_attention_row(*qk)), out

    @torch.no_grad()
    def forward(self, images, output_attentions=False):
        """images [B, 3, H, W] -> features [B, N, C] (input dtype); with output_attentions also the
        CLS->patch attention row [B, N] (float32). A list of images gives lists."""
        if isinstance(images, list):
            outs = [self.forward(img.unsqueeze(0), output_attentions) for img in images]
            if output_attentions:
                return [f for f, _ in outs], [a for _, a in outs]
            return outs
        feats, attn = self._encode(images.to(device=self.device, dtype=self.dtype), output_attentions)
        feats = feats.to(images.dtype)
        return (feats, attn) if output_attentions else feats

    # ---- properties (upstream names) --------------------------------------------------------------
    @property
    def dummy_feature(self):
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self):
        return self.vision_tower.dtype

    @property
    def device(self):
        return self.vision_tower.device

    @property
    def config(self):
        if self.is_loaded:
            return self.vision_tower.config
        if self._cfg_only is None:
            self._cfg_only = CLIPVisionConfig.from_pretrained(resolve_vision_tower(self.vision_tower_name))
        return self._cfg_only

    @property
    def hidden_size(self):
        return self.config.hidden_size

    @property
    def num_patches_per_side(self):
        return self.config.image_size // self.config.patch_size

    @property
    def num_patches(self):
        return self.num_patches_per_side**2
