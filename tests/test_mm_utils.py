"""Preprocessing and prompt tokenization, checked against references computed independently here."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import (KeywordsStoppingCriteria, divide_to_patches, expand2square, get_anyres_image_grid_shape,
                            get_model_name_from_path, load_image, load_image_from_base64, pil_image_processor,
                            process_anyres_image, process_images, resize_and_pad_image, select_best_resolution,
                            tokenizer_image_token)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# openai/clip-vit-large-patch14-336 preprocessor_config.json, as published (int sizes, legacy type name)
OPENAI_CLIP_336 = {"crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                   "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": list(MEAN), "image_std": list(STD),
                   "resample": 3, "size": 336}
SETTINGS = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_mean=list(MEAN),
                image_std=list(STD), do_convert_rgb=True, resample=3, do_resize=True, do_center_crop=True,
                do_rescale=True, do_normalize=True)


def pil_clip_class():
    try:  # transformers >= 5: the PIL/numpy backend has its own name; CLIPImageProcessor is torchvision-backed
        from transformers import CLIPImageProcessorPil
        return CLIPImageProcessorPil
    except ImportError:
        from transformers import CLIPImageProcessor
        return CLIPImageProcessor


class Cfg:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.fixture(scope="module")
def processor():
    """CLIP-L/336 settings, built in memory (no download)."""
    proc = pil_clip_class()(**SETTINGS)
    assert getattr(proc, "backend", "pil") == "pil"
    return proc


def noise_image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def reference_clip_pixels(img):
    """CLIP-L/336 preprocessing by hand, as transformers 4.x did it: shortest side to 336 (long side truncated
    with int()), PIL bicubic, centre crop 336 (offsets floored), * (1/255) in float64 then float32,
    (x - mean) / std in float32."""
    w, h = img.size
    size = (336, int(336 * h / w)) if w <= h else (int(336 * w / h), 336)
    img = img.convert("RGB").resize(size, Image.BICUBIC)
    w, h = img.size
    left, top = (w - 336) // 2, (h - 336) // 2
    arr = np.asarray(img.crop((left, top, left + 336, top + 336)))
    arr = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    arr = (arr - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def assert_same(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


# ---- expand2square / anyres geometry -------------------------------------------------------------
def test_expand2square_centres_on_background():
    wide = expand2square(Image.new("RGB", (40, 20), (255, 0, 0)), (1, 2, 3))
    assert wide.size == (40, 40)
    assert wide.getpixel((0, 9)) == (1, 2, 3) and wide.getpixel((0, 10)) == (255, 0, 0)  # offset (40-20)//2 = 10
    assert wide.getpixel((39, 29)) == (255, 0, 0) and wide.getpixel((39, 30)) == (1, 2, 3)
    tall = expand2square(Image.new("RGB", (21, 40), (0, 255, 0)), (9, 9, 9))
    assert tall.size == (40, 40)  # offset (40-21)//2 = 9: columns 9..29 are the image
    assert tall.getpixel((8, 0)) == (9, 9, 9) and tall.getpixel((9, 0)) == (0, 255, 0)
    assert tall.getpixel((29, 39)) == (0, 255, 0) and tall.getpixel((30, 39)) == (9, 9, 9)
    same = Image.new("RGB", (5, 5))
    assert expand2square(same, (0, 0, 0)) is same


def test_select_best_resolution_and_ties():
    assert select_best_resolution((500, 300), PINPOINTS) == (672, 336)
    assert select_best_resolution((300, 500), PINPOINTS) == (336, 672)
    assert select_best_resolution((1000, 1000), PINPOINTS) == (672, 672)
    assert select_best_resolution((1000, 300), PINPOINTS) == (1008, 336)
    # every candidate keeps all 100*100 pixels: least waste wins, and between equal waste the first listed
    assert select_best_resolution((100, 100), PINPOINTS) == (336, 672)
    assert select_best_resolution((100, 100), [[672, 672], [672, 336], [336, 672]]) == (672, 336)
    # more kept pixels beats less waste
    assert select_best_resolution((700, 700), [[336, 336], [672, 672], [1008, 1008]]) == (1008, 1008)


def test_grid_shape_accepts_list_string_and_tuples():
    assert get_anyres_image_grid_shape((500, 300), PINPOINTS, 336) == (2, 1)
    assert get_anyres_image_grid_shape((300, 500), PINPOINTS, 336) == (1, 2)
    assert get_anyres_image_grid_shape((1000, 300), str(PINPOINTS), 336) == (3, 1)
    assert get_anyres_image_grid_shape((800, 800), tuple(map(tuple, PINPOINTS)), 336) == (2, 2)


def test_resize_and_pad_is_black_and_centred():
    img = Image.new("RGB", (500, 300), (255, 255, 255))
    padded = resize_and_pad_image(img, (672, 336))
    assert padded.size == (672, 336) and padded.mode == "RGB"
    # height constrained: scale 336/300 -> width 560, centred: 56 black columns each side
    assert padded.getpixel((55, 100)) == (0, 0, 0) and padded.getpixel((56, 100)) == (255, 255, 255)
    assert padded.getpixel((615, 100)) == (255, 255, 255) and padded.getpixel((616, 100)) == (0, 0, 0)
    tall = resize_and_pad_image(Image.new("RGB", (300, 500), (255, 255, 255)), (336, 672))
    assert tall.getpixel((100, 55)) == (0, 0, 0) and tall.getpixel((100, 56)) == (255, 255, 255)
    assert tall.getpixel((100, 615)) == (255, 255, 255) and tall.getpixel((100, 616)) == (0, 0, 0)
    # the free side is rounded up: 333 * 336/500 = 223.78 -> 224 columns, pasted at (672-224)//2 = 224
    odd = resize_and_pad_image(Image.new("RGB", (333, 500), (255, 255, 255)), (672, 336))
    assert odd.getpixel((223, 100)) == (0, 0, 0) and odd.getpixel((224, 100)) == (255, 255, 255)
    assert odd.getpixel((447, 100)) == (255, 255, 255) and odd.getpixel((448, 100)) == (0, 0, 0)


def test_divide_to_patches_is_row_major():
    img = Image.new("RGB", (672, 672))
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]  # TL, TR, BL, BR
    for (x, y), c in zip([(0, 0), (336, 0), (0, 336), (336, 336)], colours):
        img.paste(Image.new("RGB", (336, 336), c), (x, y))
    tiles = divide_to_patches(img, 336)
    assert [t.size for t in tiles] == [(336, 336)] * 4
    assert [t.getpixel((100, 100)) for t in tiles] == colours
    assert [t.size for t in divide_to_patches(Image.new("RGB", (1008, 336)), 336)] == [(336, 336)] * 3


# ---- process_images ------------------------------------------------------------------------------
def test_pad_preprocessing_matches_reference(processor):
    images = [noise_image(300, 200), noise_image(200, 300, 1)]
    pixels = process_images(images, processor, Cfg(image_aspect_ratio="pad"))
    assert isinstance(pixels, torch.Tensor) and pixels.shape == (2, 3, 336, 336) and pixels.dtype == torch.float32
    for img, px in zip(images, pixels):
        assert_same(px, reference_clip_pixels(expand2square(img, (122, 116, 104))))


def test_pad_background_comes_from_image_mean(processor):
    # a black image padded with the mean colour: the padding normalises to (int(m*255)/255 - m) / s, near 0
    pixels = process_images([Image.new("RGB", (336, 112))], processor, Cfg(image_aspect_ratio="pad"))
    expected = [(int(m * 255) / 255 - m) / s for m, s in zip(MEAN, STD)]
    assert torch.allclose(pixels[0, :, 0, 0], torch.tensor(expected), atol=1e-4)
    assert torch.allclose(pixels[0, :, 168, 168], torch.tensor([-m / s for m, s in zip(MEAN, STD)]), atol=1e-4)


def test_square_preprocessing_resizes_shortest_side_and_crops(processor):
    img = noise_image(405, 300)  # 336 * 405/300 = 453.6: the long side is truncated to 453, not rounded
    pixels = process_images([img, noise_image(300, 405, 1)], processor, Cfg(image_aspect_ratio="square"))
    assert pixels.shape == (2, 3, 336, 336)
    assert_same(pixels[0], reference_clip_pixels(img))
    assert_same(pixels[1], reference_clip_pixels(noise_image(300, 405, 1)))
    no_mode = process_images([img], processor, Cfg())  # no image_aspect_ratio: same as square
    assert_same(no_mode[0], pixels[0])


def test_anyres_preprocessing(processor):
    img = noise_image(500, 300)
    cfg = Cfg(image_aspect_ratio="anyres", image_grid_pinpoints=PINPOINTS)
    pixels = process_images([img, noise_image(480, 320, 1)], processor, cfg)
    assert pixels.shape == (2, 3, 3, 336, 336)  # base view + a 2x1 grid of tiles, for both images
    # base view: the whole image squashed to 336x336 (PIL's default bicubic), then CLIP preprocessing
    assert_same(pixels[0, 0], reference_clip_pixels(img.resize((336, 336), Image.BICUBIC)))
    # tiles: resize to 560x336, centre on a black 672x336 canvas, split left | right
    canvas = Image.new("RGB", (672, 336))
    canvas.paste(img.resize((560, 336), Image.BICUBIC), (56, 0))
    assert_same(pixels[0, 1], reference_clip_pixels(canvas.crop((0, 0, 336, 336))))
    assert_same(pixels[0, 2], reference_clip_pixels(canvas.crop((336, 0, 672, 336))))
    single = process_anyres_image(img, processor, str(PINPOINTS))  # string pinpoints, as in some configs
    assert_same(single, pixels[0])
    mixed = process_images([img, noise_image(1000, 300)], processor, cfg)
    assert isinstance(mixed, list) and mixed[0].shape == (3, 3, 336, 336) and mixed[1].shape == (4, 3, 336, 336)


def test_published_config_form_gives_the_same_pixels(processor):
    """The real preprocessor_config.json stores int sizes; transformers turns them into the same settings."""
    published = pil_clip_class().from_dict(OPENAI_CLIP_336)
    assert published.size["shortest_edge"] == 336 and published.crop_size["height"] == 336
    images = [noise_image(500, 300)]
    for cfg in (Cfg(image_aspect_ratio="pad"), Cfg(image_aspect_ratio="anyres", image_grid_pinpoints=PINPOINTS)):
        assert_same(process_images(images, published, cfg), process_images(images, processor, cfg))


def test_default_clip_class_runs_the_pil_pipeline(processor):
    """`CLIPImageProcessor` is torchvision-backed on transformers 5 (or falls back to PIL without torchvision);
    process_images must give upstream's PIL numbers either way."""
    from transformers import CLIPImageProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = CLIPImageProcessor(**SETTINGS)
    images = [noise_image(300, 200)]
    assert_same(process_images(images, default, Cfg(image_aspect_ratio="pad"))[0],
                reference_clip_pixels(expand2square(images[0], (122, 116, 104))))


def test_torchvision_backed_processor_is_swapped_for_its_pil_twin(processor):
    cls = pil_clip_class()

    class CLIPImageProcessor(cls):  # stands in for transformers 5's torchvision-backed class
        @property
        def backend(self):
            return "torchvision"

        def preprocess(self, *args, **kwargs):
            raise AssertionError("the torchvision pipeline was used")

    fake = CLIPImageProcessor(**SETTINGS)
    twin = pil_image_processor(fake)
    assert twin is not fake and getattr(twin, "backend", "pil") == "pil" and pil_image_processor(fake) is twin
    assert "_llava_pil_twin" not in fake.to_dict()  # nothing extra would be saved with the processor
    img = noise_image(300, 200)
    assert_same(process_images([img], fake, Cfg(image_aspect_ratio="pad"))[0],
                reference_clip_pixels(expand2square(img, (122, 116, 104))))
    assert pil_image_processor(processor) is processor


# ---- small helpers -------------------------------------------------------------------------------
def test_get_model_name_from_path():
    assert get_model_name_from_path("liuhaotian/llava-v1.5-7b") == "llava-v1.5-7b"
    assert get_model_name_from_path("/ckpts/llava-v1.5-7b/") == "llava-v1.5-7b"
    assert get_model_name_from_path("out/llava-lora/checkpoint-500") == "llava-lora_checkpoint-500"
    assert get_model_name_from_path("out/llava-lora/checkpoint-500/") == "llava-lora_checkpoint-500"
    assert get_model_name_from_path("checkpoint-500") == "checkpoint-500"


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="bad.jpg"):
        load_image(str(bad))
    truncated = tmp_path / "cut.png"
    noise_image(64, 64).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.png"):
        load_image(str(truncated))
    good = tmp_path / "g.png"
    Image.new("L", (4, 3)).save(good)
    loaded = load_image(good)  # a Path works too
    assert loaded.mode == "RGB" and loaded.size == (4, 3)


def test_load_image_from_base64():
    import base64
    from io import BytesIO

    buf = BytesIO()
    Image.new("RGB", (7, 5), (1, 2, 3)).save(buf, format="PNG")
    img = load_image_from_base64(base64.b64encode(buf.getvalue()).decode())
    assert img.size == (7, 5) and img.convert("RGB").getpixel((0, 0)) == (1, 2, 3)


# ---- tokenizer_image_token (needs the conftest `tiny_tokenizer`: LLaMA-style sentencepiece) ---------
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
    "<image><image>",
])
def test_tokenizer_image_token(tiny_tokenizer, prompt):
    ids = tokenizer_image_token(prompt, tiny_tokenizer)
    assert isinstance(ids, list) and ids == by_hand(prompt, tiny_tokenizer)
    assert ids.count(IMAGE_TOKEN_INDEX) == prompt.count("<image>")
    assert ids[0] == tiny_tokenizer.bos_token_id == 1 and ids.count(1) == 1
    assert tiny_tokenizer.eos_token_id not in ids
    pt = tokenizer_image_token(prompt, tiny_tokenizer, return_tensors="pt")
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.long and pt.ndim == 1 and pt.tolist() == ids
    with pytest.raises(ValueError):
        tokenizer_image_token(prompt, tiny_tokenizer, return_tensors="np")


def test_tokenizer_image_token_custom_index(tiny_tokenizer):
    ids = tokenizer_image_token("<image>\nHi", tiny_tokenizer, image_token_index=-7)
    assert ids[:2] == [1, -7] and IMAGE_TOKEN_INDEX not in ids


def test_text_after_image_gets_the_sentencepiece_dummy_prefix(tiny_tokenizer):
    """As with LLaMA's tokenizer: "\\n" after <image> becomes '▁' then the byte-fallback <0x0A> (id 13)."""
    ids = tokenizer_image_token("USER: <image>\nHi", tiny_tokenizer)
    pos = ids.index(IMAGE_TOKEN_INDEX)
    assert tiny_tokenizer.convert_ids_to_tokens(ids[pos + 1 : pos + 3]) == ["▁", "<0x0A>"]
    assert ids[pos + 2] == 13


# ---- KeywordsStoppingCriteria --------------------------------------------------------------------
def test_keywords_stopping_criteria_on_new_tokens_only(tiny_tokenizer):
    """LLaVA generates from embeddings, so the ids the criteria sees are only the new tokens."""
    stop_ids = tiny_tokenizer("###").input_ids[1:]
    prompt = torch.tensor([tokenizer_image_token("<image>\nA chat.###Human: hi###Assistant:", tiny_tokenizer)])
    crit = KeywordsStoppingCriteria(["###"], tiny_tokenizer, prompt)
    hello = tiny_tokenizer("hello").input_ids[1:]
    assert not crit(torch.tensor([hello]), None).any()
    out = crit(torch.tensor([hello + stop_ids]), None)
    assert out.dtype == torch.bool and out.shape == (1,) and out.all()
    other = (hello * 8)[: len(hello + stop_ids)]  # same length as the first row, no keyword
    assert not crit(torch.tensor([hello + stop_ids, other]), None).any()  # every row must hit
    assert crit(torch.tensor([hello + stop_ids, other[:-len(stop_ids)] + stop_ids]), None).all()


def test_keywords_stopping_criteria_with_prompt_in_the_output(tiny_tokenizer):
    """Generation from input_ids returns prompt + new tokens: a keyword inside the prompt must not stop it."""
    prompt_ids = tiny_tokenizer("A chat.###Human: hi###").input_ids
    crit = KeywordsStoppingCriteria(["###"], tiny_tokenizer, torch.tensor([prompt_ids]))
    hello = tiny_tokenizer("hello").input_ids[1:]
    stop_ids = tiny_tokenizer("###").input_ids[1:]
    assert not crit(torch.tensor([prompt_ids + hello]), None).any()
    assert crit(torch.tensor([prompt_ids + hello + stop_ids]), None).all()


def test_keywords_stopping_criteria_by_decoded_text(tiny_tokenizer):
    """A keyword reached through a different tokenization still stops (decoded tail contains it)."""
    crit = KeywordsStoppingCriteria(["</s>", "STOP"], tiny_tokenizer, torch.zeros(1, 5, dtype=torch.long))
    assert crit(torch.tensor([tiny_tokenizer("ok").input_ids[1:] + [tiny_tokenizer.eos_token_id]]), None).all()
    letters = [i for c in "STOP" for i in tiny_tokenizer.convert_tokens_to_ids([f"<0x{ord(c):02X}>"])]
    assert tiny_tokenizer.decode(letters) == "STOP" and len(letters) <= crit.max_keyword_len  # tail holds it
    assert crit(torch.tensor([tiny_tokenizer("ok").input_ids[1:] + letters]), None).all()
