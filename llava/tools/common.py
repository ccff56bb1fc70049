"""What the calibrate and visualize commands share: load a model, turn an image into the pruning inputs."""
import torch

from llava.mm_utils import expand2square, get_model_name_from_path, load_image, process_images


def load_for_tools(args):
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(
        args.model_path, args.model_base, get_model_name_from_path(args.model_path), device=args.device,
        vision_tower=getattr(args, "vision_tower", None))
    return model, processor


@torch.no_grad()
def pruning_inputs(model, processor, image, with_states=False):
    """(post-projector features [V, N, D], CLS attention [V, N]) of every view of one PIL image, and with
    with_states the tower's select-layer states [V, N, C] as a third item."""
    pixels = process_images([image], processor, model.config)
    pixels = pixels[0] if isinstance(pixels, list) else pixels
    views = pixels if pixels.ndim == 4 else pixels[0]
    views = views.to(model.device, dtype=model.get_input_embeddings().weight.dtype)
    states, attention, _ = model.get_vision_tower().encode(views, attention=True)
    features = model.get_model().mm_projector(states)
    return (features, attention, states) if with_states else (features, attention)


def model_view(model, processor, image):
    """The base view as the tower sees it (padded to square for `pad`), resized to the crop size."""
    side = processor.crop_size["height"]
    if getattr(model.config, "image_aspect_ratio", None) == "pad":
        image = expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
    return image.resize((side, side))


def add_model_args(parser):
    """Add the model flags (the generators' spellings) to an argparse parser; returns the parser."""
    parser.add_argument("--model-path", required=True,
                        help="checkpoint folder, or a hub id already in the Hugging Face cache")
    parser.add_argument("--model-base", default=None, help="the base LLM of a LoRA or projector-only checkpoint")
    parser.add_argument("--vision-tower", default=None, help="override the config's mm_vision_tower")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda, cpu, mps, ...")
    return parser


__all__ = ["add_model_args", "load_for_tools", "load_image", "model_view", "pruning_inputs"]
