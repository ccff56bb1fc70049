"""Image preprocessing and prompt tokenization with upstream's names and numerics."""
import ast
import base64
import math
import os
from io import BytesIO

import torch
from PIL import Image, UnidentifiedImageError
from transformers import StoppingCriteria

from llava.constants import IMAGE_TOKEN_INDEX


def load_image_from_base64(image):
    return Image.open(BytesIO(base64.b64decode(image)))


def load_image(image_file):
    """RGB PIL image from a path or an http(s) URL; a clear error naming the file when it cannot be read."""
    try:
        if image_file.startswith(("http://", "https://")):
            from urllib.request import urlopen

            with urlopen(image_file, timeout=30) as response:
                return Image.open(BytesIO(response.read())).convert("RGB")
        if not os.path.isfile(image_file):
            raise FileNotFoundError(f"Image file not found: {image_file}")
        with Image.open(image_file) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"Cannot read image {image_file}: {e}") from e


def _pinpoints(grid_pinpoints):
    return grid_pinpoints if isinstance(grid_pinpoints, list) else ast.literal_eval(grid_pinpoints)


def select_best_resolution(original_size, possible_resolutions):
    """(width, height) among the candidates that keeps the most pixels, then wastes the least."""
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
    """Aspect-preserving resize into target (width, height), centred on a black canvas."""
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w, scale_h = target_width / original_width, target_height / original_height
    if scale_w < scale_h:
        new_width, new_height = target_width, min(math.ceil(original_height * scale_w), target_height)
    else:
        new_width, new_height = min(math.ceil(original_width * scale_h), target_width), target_height
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(image.resize((new_width, new_height)), ((target_width - new_width) // 2, (target_height - new_height) // 2))
    return canvas


def divide_to_patches(image, patch_size):
    """Row-major square tiles of side patch_size."""
    width, height = image.size
    return [image.crop((x, y, x + patch_size, y + patch_size))
            for y in range(0, height, patch_size) for x in range(0, width, patch_size)]


def get_anyres_image_grid_shape(image_size, grid_pinpoints, patch_size):
    """(grid width, grid height) in tiles for an image of size (width, height)."""
    width, height = select_best_resolution(image_size, _pinpoints(grid_pinpoints))
    return width // patch_size, height // patch_size


def _pixels(processor, image):
    return torch.as_tensor(processor.preprocess(image, return_tensors="pt")["pixel_values"][0])


def process_anyres_image(image, processor, grid_pinpoints):
    """[1 + P, 3, S, S]: the whole image resized to S x S, then the tiles of the best resolution."""
    best = select_best_resolution(image.size, _pinpoints(grid_pinpoints))
    tiles = divide_to_patches(resize_and_pad_image(image, best), processor.crop_size["height"])
    side = processor.size["shortest_edge"]
    views = [image.resize((side, side))] + tiles
    return torch.stack([_pixels(processor, view) for view in views], dim=0)


def expand2square(pil_img, background_color):
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    result = Image.new(pil_img.mode, (side, side), background_color)
    result.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return result


def process_images(images, image_processor, model_cfg):
    """`pad` (1.5) -> [N, 3, S, S]; `anyres` (1.6) -> [N, 1+P, 3, S, S] (a list if P differs);
    anything else -> the processor's own resize + centre crop, [N, 3, S, S]."""
    mode = getattr(model_cfg, "image_aspect_ratio", None)
    if mode == "pad":
        background = tuple(int(x * 255) for x in image_processor.image_mean)
        out = [_pixels(image_processor, expand2square(img, background)) for img in images]
    elif mode == "anyres":
        out = [process_anyres_image(img, image_processor, model_cfg.image_grid_pinpoints) for img in images]
    else:
        return torch.as_tensor(image_processor(images, return_tensors="pt")["pixel_values"])
    if all(x.shape == out[0].shape for x in out):
        return torch.stack(out, dim=0)
    return out


def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX, return_tensors=None):
    """Token ids of a prompt with one `image_token_index` per `<image>`; each text chunk is tokenized on
    its own (as upstream), a single leading BOS is kept, no EOS is added."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    input_ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i > 0:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[offset:])
    if return_tensors is None:
        return input_ids
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    raise ValueError(f"Unsupported tensor type: {return_tensors}")


def get_model_name_from_path(model_path):
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-"):
        return parts[-2] + "_" + parts[-1]
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stop when every sequence ends with one of the keywords (by ids or by decoded text).

    Works both when `output_ids` holds prompt + new tokens and when it holds only the new tokens
    (generation from embeddings, as LLaVA does): only the tail of the sequence is compared.
    """

    def __init__(self, keywords, tokenizer, input_ids):
        self.keywords, self.tokenizer = keywords, tokenizer
        self.keyword_ids = []
        for keyword in keywords:
            ids = tokenizer(keyword).input_ids
            if len(ids) > 1 and ids[0] == tokenizer.bos_token_id:
                ids = ids[1:]
            self.keyword_ids.append(torch.tensor(ids))
        self.max_keyword_len = max(len(k) for k in self.keyword_ids)
        self.start_len = input_ids.shape[1]

    def _hit(self, output_ids):
        for keyword_id in self.keyword_ids:
            n = keyword_id.shape[0]
            if output_ids.shape[0] >= n and torch.equal(output_ids[-n:], keyword_id.to(output_ids.device)):
                return True
        tail = self.tokenizer.decode(output_ids[-self.max_keyword_len :], skip_special_tokens=True)
        return any(keyword in tail for keyword in self.keywords)

    def __call__(self, output_ids, scores, **kwargs):
        done = all(self._hit(row) for row in output_ids)  # upstream: stop only when every row hit
        return torch.full((output_ids.shape[0],), done, dtype=torch.bool, device=output_ids.device)
