"""Image preprocessing and prompt tokenization with upstream LLaVA's names and numerics.

Image processors on transformers 5: `CLIPImageProcessor` is the torchvision-backed class (its resize is
torch's bicubic, not PIL's, so pixels differ slightly from upstream LLaVA's); the PIL/numpy pipeline that
upstream used (transformers 4.x `CLIPImageProcessor`) is `CLIPImageProcessorPil`. Without torchvision,
`CLIPImageProcessor(...)` silently falls back to the PIL class. `process_images` always runs the PIL
pipeline: a torchvision-backed processor is swapped for its PIL twin (same settings) first.
"""
import ast
import base64
import math
import os
import weakref
from io import BytesIO

import torch
from PIL import Image, UnidentifiedImageError
from transformers import StoppingCriteria

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


# ---- images ---------------------------------------------------------------------------------------
def load_image_from_base64(image):
    """PIL image from a base64 string (mode left as stored)."""
    return Image.open(BytesIO(base64.b64decode(image)))


def load_image(image_file):
    """RGB PIL image from a local path or an http(s) URL.

    Raises FileNotFoundError (missing local file) or ValueError (unreadable / not an image), both naming
    the file, instead of a traceback from deep inside PIL.
    """
    image_file = os.fspath(image_file)
    try:
        if image_file.startswith(("http://", "https://")):
            from urllib.request import urlopen

            with urlopen(image_file, timeout=30) as response:
                data = response.read()
            return Image.open(BytesIO(data)).convert("RGB")
        if os.path.isdir(image_file):
            raise ValueError(f"{image_file} is a directory, not an image file")
        if not os.path.isfile(image_file):
            raise FileNotFoundError(f"Image file not found: {image_file}")
        with Image.open(image_file) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"Cannot read image {image_file}: {e}") from e


def expand2square(pil_img, background_color):
    """Pad to a square of side max(w, h) filled with background_color, the image centred on the short axis."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    result = Image.new(pil_img.mode, (side, side), background_color)
    result.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return result


def _pinpoints(grid_pinpoints):
    """`image_grid_pinpoints` as a list of (width, height); configs may store it as its string form."""
    if isinstance(grid_pinpoints, str):
        grid_pinpoints = ast.literal_eval(grid_pinpoints)
    return [tuple(p) for p in grid_pinpoints]


def select_best_resolution(original_size, possible_resolutions):
    """The (width, height) candidate that keeps the most of the image's pixels, then wastes the fewest.

    For each candidate: scale = min(cw / w, ch / h); effective = min(int(w*scale) * int(h*scale), w*h);
    wasted = cw*ch - effective. Ties in both keep the first candidate.
    """
    original_width, original_height = original_size
    best, best_effective, best_wasted = None, 0, float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled = int(original_width * scale) * int(original_height * scale)
        effective = min(downscaled, original_width * original_height)
        wasted = width * height - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (width, height), effective, wasted
    return best


def resize_and_pad_image(image, target_resolution):
    """Aspect-preserving resize to fit target (width, height), centred on a black RGB canvas of that size.

    The constrained side becomes the target; the other is min(ceil(side * scale), target).
    """
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w, scale_h = target_width / original_width, target_height / original_height
    if scale_w < scale_h:
        new_width, new_height = target_width, min(math.ceil(original_height * scale_w), target_height)
    else:
        new_width, new_height = min(math.ceil(original_width * scale_h), target_width), target_height
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    offset = ((target_width - new_width) // 2, (target_height - new_height) // 2)
    canvas.paste(image.resize((new_width, new_height)), offset)
    return canvas


def divide_to_patches(image, patch_size):
    """Square tiles of side patch_size in row-major order (left to right, then top to bottom)."""
    width, height = image.size
    return [image.crop((x, y, x + patch_size, y + patch_size))
            for y in range(0, height, patch_size) for x in range(0, width, patch_size)]


def get_anyres_image_grid_shape(image_size, grid_pinpoints, patch_size):
    """(grid width, grid height) in tiles of side patch_size for an image of size (width, height)."""
    width, height = select_best_resolution(image_size, _pinpoints(grid_pinpoints))
    return width // patch_size, height // patch_size


_PIL_TWINS = weakref.WeakKeyDictionary()  # processor -> its PIL twin (not an attribute: to_dict would save it)


def pil_image_processor(image_processor):
    """The PIL/numpy version of a transformers image processor (upstream LLaVA's numerics).

    A transformers-5 torchvision-backed processor (`backend == "torchvision"`) is rebuilt once as its
    `...Pil` twin from the same settings; anything else is returned as is.
    """
    if getattr(image_processor, "backend", "pil") != "torchvision":
        return image_processor
    twin = _PIL_TWINS.get(image_processor)
    if twin is None:
        import transformers

        name = type(image_processor).__name__
        name = name[: -len("Fast")] if name.endswith("Fast") else name
        cls = getattr(transformers, name + "Pil", None)
        if cls is None:
            return image_processor  # no PIL twin for this processor: use it as given
        twin = cls.from_dict(image_processor.to_dict())
        _PIL_TWINS[image_processor] = twin
    return twin


def _pixels(processor, image):
    """[3, H, W] float32 tensor for one PIL image through processor.preprocess."""
    return torch.as_tensor(processor.preprocess(image, return_tensors="pt")["pixel_values"][0])


def process_anyres_image(image, processor, grid_pinpoints):
    """[1 + P, 3, S, S]: the whole image resized (aspect ignored) to shortest_edge^2, then the P tiles of the
    image resized and black-padded to its best grid resolution."""
    processor = pil_image_processor(processor)
    best = select_best_resolution(image.size, _pinpoints(grid_pinpoints))
    tiles = divide_to_patches(resize_and_pad_image(image, best), processor.crop_size["height"])
    side = processor.size["shortest_edge"]
    views = [image.resize((side, side))] + tiles
    return torch.stack([_pixels(processor, view) for view in views], dim=0)


def process_images(images, image_processor, model_cfg):
    """Pixel tensors for a list of PIL images, by `model_cfg.image_aspect_ratio`.

    `pad` (LLaVA-1.5): pad to square with the processor's mean colour, then preprocess -> [N, 3, S, S].
    `anyres` (LLaVA-1.6): `process_anyres_image` -> [N, 1 + P, 3, S, S], or a list when P differs.
    anything else: the processor's own resize + centre crop on the whole list -> [N, 3, S, S].
    """
    image_processor = pil_image_processor(image_processor)
    mode = getattr(model_cfg, "image_aspect_ratio", None)
    if mode == "pad":
        background = tuple(int(x * 255) for x in image_processor.image_mean)
        out = [_pixels(image_processor, expand2square(img, background)) for img in images]
    elif mode == "anyres":
        out = [process_anyres_image(img, image_processor, model_cfg.image_grid_pinpoints) for img in images]
    else:
        return torch.as_tensor(image_processor(images, return_tensors="pt")["pixel_values"])
    if out and all(x.shape == out[0].shape for x in out):
        return torch.stack(out, dim=0)
    return out


# ---- text -----------------------------------------------------------------------------------------
def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX, return_tensors=None):
    """Token ids of `prompt` with one `image_token_index` in place of each `<image>`.

    Each text chunk between markers is tokenized on its own (as upstream, so sentencepiece gives every
    chunk its dummy-prefix space); if the first chunk starts with BOS, one BOS is kept in front and every
    chunk's first token is dropped. No truncation, no EOS. `return_tensors`: None -> list, "pt" -> 1-D
    long tensor, anything else -> ValueError.
    """
    if return_tensors not in (None, "pt"):
        raise ValueError(f"Unsupported tensor type: {return_tensors}")
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    input_ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i > 0:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[offset:])
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    return input_ids


def get_model_name_from_path(model_path):
    """Last path component; `<parent>_checkpoint-N` for a trainer checkpoint folder."""
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return parts[-2] + "_" + parts[-1]
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stop when every sequence of the batch ends with one of `keywords` (by token ids, or by decoded text).

    Works whether the ids handed to the criteria hold prompt + new tokens (generation from `input_ids`) or
    only the new tokens (generation from `inputs_embeds`, as LLaVA does): if a row starts with the prompt
    it was built with, only what follows the prompt is looked at; otherwise every id is new.
    """

    def __init__(self, keywords, tokenizer, input_ids):
        self.keywords, self.tokenizer = list(keywords), tokenizer
        self.keyword_ids = []
        for keyword in self.keywords:
            ids = tokenizer(keyword).input_ids
            if len(ids) > 1 and ids[0] == tokenizer.bos_token_id:
                ids = ids[1:]
            self.keyword_ids.append(torch.tensor(ids, dtype=torch.long))
        self.max_keyword_len = max(len(k) for k in self.keyword_ids)
        self.prompt_ids = input_ids.detach().cpu()
        self.start_len = input_ids.shape[1]

    def _generated(self, row, index):
        """The new tokens of one output row (1-D)."""
        prompt = self.prompt_ids[min(index, self.prompt_ids.shape[0] - 1)]
        n = prompt.shape[0]
        if n and row.shape[0] >= n and torch.equal(row[:n].cpu(), prompt):
            return row[n:]
        return row

    def _hit(self, generated):
        for keyword_id in self.keyword_ids:
            n = keyword_id.shape[0]
            if generated.shape[0] >= n and torch.equal(generated[-n:].cpu(), keyword_id):
                return True
        tail = generated[-min(generated.shape[0], self.max_keyword_len):] if generated.shape[0] else generated
        text = self.tokenizer.decode(tail.tolist(), skip_special_tokens=True)
        return any(keyword in text for keyword in self.keywords)

    def __call__(self, output_ids, scores=None, **kwargs):
        done = all(self._hit(self._generated(row, i)) for i, row in enumerate(output_ids))
        return torch.full((output_ids.shape[0],), done, dtype=torch.bool, device=output_ids.device)
