"""Preprocessing and prompt tokenization, checked against references computed independently here."""
import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import (KeywordsStoppingCriteria, divide_to_patches, expand2square, get_anyres_image_grid_shape,
                            get_model_name_from_path, load_image, process_images, resize_and_pad_image,
                            select_best_resolution, tokenizer_image_token)
from llava.model.multimodal_encoder.clip_encoder import load_image_processor
from llava.tools.make_tiny_checkpoint import make_vision_tower

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


class Cfg:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    make_vision_tower(str(folder))
    return load_image_processor(str(folder))


def noise_image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def reference_clip_pixels(img):
    """CLIP-L/336 preprocessing by hand: shortest side 336 (bicubic), centre crop 336, /255, normalise."""
    w, h = img.size
    s = 336 / min(w, h)
    size = (336, int(round(h * s))) if w <= h else (int(round(w * s)), 336)
    img = img.resize(size, Image.BICUBIC)
    w, h = img.size
    left, top = (w - 336) // 2, (h - 336) // 2
    arr = np.asarray(img.crop((left, top, left + 336, top + 336)), dtype=np.float64) / 255.0
    return torch.tensor(((arr - MEAN) / STD).transpose(2, 0, 1), dtype=torch.float32)


def test_expand2square_centres_on_background():
    wide = expand2square(Image.new("RGB", (40, 20), (255, 0, 0)), (1, 2, 3))
    assert wide.size == (40, 40)
    assert wide.getpixel((0, 0)) == (1, 2, 3) and wide.getpixel((0, 10)) == (255, 0, 0)
    assert wide.getpixel((0, 9)) == (1, 2, 3) and wide.getpixel((0, 29)) == (255, 0, 0)
    tall = expand2square(Image.new("RGB", (21, 40), (0, 255, 0)), (9, 9, 9))
    assert tall.size == (40, 40) and tall.getpixel((9, 0)) == (0, 255, 0) and tall.getpixel((8, 0)) == (9, 9, 9)
    same = Image.new("RGB", (5, 5))
    assert expand2square(same, (0, 0, 0)) is same


def test_pad_preprocessing_matches_reference(processor):
    images = [noise_image(300, 200), noise_image(200, 300, 1)]
    pixels = process_images(images, processor, Cfg(image_aspect_ratio="pad"))
    assert pixels.shape == (2, 3, 336, 336) and pixels.dtype == torch.float32
    for img, px in zip(images, pixels):
        ref = reference_clip_pixels(expand2square(img, (122, 116, 104)))
        torch.testing.assert_close(px, ref, rtol=0, atol=1e-5)


def test_square_preprocessing_crops(processor):
    img = noise_image(400, 336)
    pixels = process_images([img], processor, Cfg(image_aspect_ratio="square"))
    assert pixels.shape == (1, 3, 336, 336)
    torch.testing.assert_close(pixels[0], reference_clip_pixels(img), rtol=0, atol=1e-5)


def test_select_best_resolution_and_ties():
    assert select_best_resolution((500, 300), PINPOINTS) == (672, 336)
    assert select_best_resolution((300, 500), PINPOINTS) == (336, 672)
    assert select_best_resolution((1000, 1000), PINPOINTS) == (672, 672)
    assert select_best_resolution((100, 100), PINPOINTS) == (336, 672)  # same effective area: least waste, first
    assert get_anyres_image_grid_shape((500, 300), PINPOINTS, 336) == (2, 1)
    assert get_anyres_image_grid_shape((1000, 300), str(PINPOINTS), 336) == (3, 1)  # string form accepted


def test_resize_and_pad_and_tiles():
    img = Image.new("RGB", (500, 300), (255, 255, 255))
    padded = resize_and_pad_image(img, (672, 336))
    assert padded.size == (672, 336)
    # scale 336/300 = 1.12 -> width ceil(560) = 560, centred: 56 black columns each side
    assert padded.getpixel((55, 100)) == (0, 0, 0) and padded.getpixel((56, 100)) == (255, 255, 255)
    assert padded.getpixel((615, 100)) == (255, 255, 255) and padded.getpixel((616, 100)) == (0, 0, 0)
    tiles = divide_to_patches(padded, 336)
    assert [t.size for t in tiles] == [(336, 336)] * 2
    assert tiles[0].getpixel((0, 0)) == (0, 0, 0) and tiles[1].getpixel((335, 0)) == (0, 0, 0)


def test_anyres_preprocessing(processor):
    img = noise_image(500, 300)
    pixels = process_images([img], processor, Cfg(image_aspect_ratio="anyres", image_grid_pinpoints=PINPOINTS))
    assert pixels.shape == (1, 3, 3, 336, 336)  # base view + 2 tiles
    torch.testing.assert_close(pixels[0, 0], reference_clip_pixels(img.resize((336, 336))), rtol=0, atol=1e-5)
    tiles = divide_to_patches(resize_and_pad_image(img, (672, 336)), 336)
    torch.testing.assert_close(pixels[0, 2], reference_clip_pixels(tiles[1]), rtol=0, atol=1e-5)
    mixed = process_images([img, noise_image(1000, 300)], processor,
                           Cfg(image_aspect_ratio="anyres", image_grid_pinpoints=PINPOINTS))
    assert isinstance(mixed, list) and mixed[0].shape[0] == 3 and mixed[1].shape[0] == 4  # 1008x336: 3 tiles


def test_get_model_name_from_path():
    assert get_model_name_from_path("liuhaotian/llava-v1.5-7b") == "llava-v1.5-7b"
    assert get_model_name_from_path("/ckpts/llava-v1.5-7b/") == "llava-v1.5-7b"
    assert get_model_name_from_path("out/llava-lora/checkpoint-500") == "llava-lora_checkpoint-500"


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image(str(bad))
    good = tmp_path / "g.png"
    Image.new("L", (4, 4)).save(good)
    assert load_image(str(good)).mode == "RGB"


# ---- tokenizer_image_token -----------------------------------------------------------------------
def by_hand(prompt, tok):
    chunks = prompt.split("<image>")
    ids = [tok.bos_token_id]
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids += tok(chunk).input_ids[1:]  # each chunk on its own, its BOS dropped
    return ids


@pytest.mark.parametrize("prompt", [
    "A chat. USER: What is this? ASSISTANT:",
    "A chat. USER: <image>\nWhat is this? ASSISTANT:",
    "<image>\nDescribe.",
    "USER: <image>\nCompare with <image>\nplease ASSISTANT:",
])
def test_tokenizer_image_token(tiny_tokenizer, prompt):
    ids = tokenizer_image_token(prompt, tiny_tokenizer)
    assert ids == by_hand(prompt, tiny_tokenizer)
    assert ids.count(IMAGE_TOKEN_INDEX) == prompt.count("<image>")
    assert ids[0] == tiny_tokenizer.bos_token_id and ids.count(tiny_tokenizer.bos_token_id) == 1
    assert tiny_tokenizer.eos_token_id not in ids
    pt = tokenizer_image_token(prompt, tiny_tokenizer, return_tensors="pt")
    assert pt.dtype == torch.long and pt.ndim == 1 and pt.tolist() == ids
    with pytest.raises(ValueError):
        tokenizer_image_token(prompt, tiny_tokenizer, return_tensors="np")


def test_text_after_image_gets_the_sentencepiece_dummy_prefix(tiny_tokenizer):
    """As with LLaMA's tokenizer: "\\n" after <image> becomes '▁' then the byte-fallback <0x0A> (id 13)."""
    ids = tokenizer_image_token("USER: <image>\nHi", tiny_tokenizer)
    pos = ids.index(IMAGE_TOKEN_INDEX)
    assert tiny_tokenizer.convert_ids_to_tokens(ids[pos + 1 : pos + 3]) == ["▁", "<0x0A>"]
    assert ids[pos + 2] == 13


def test_keywords_stopping_criteria_on_new_tokens_only(tiny_tokenizer):
    stop_ids = tiny_tokenizer("###").input_ids[1:]
    crit = KeywordsStoppingCriteria(["###"], tiny_tokenizer, torch.zeros(1, 30, dtype=torch.long))
    hello = tiny_tokenizer("hello").input_ids[1:]
    assert not crit(torch.tensor([hello]), None).all()
    assert crit(torch.tensor([hello + stop_ids]), None).all()
    other = (hello * 8)[: len(hello + stop_ids)]  # same length as the first row, no keyword
    assert not crit(torch.tensor([hello + stop_ids, other]), None).any()  # every row must hit
