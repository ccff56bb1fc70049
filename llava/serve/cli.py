"""Chat with a LLaVA model about one image: `python -m llava.serve.cli --model-path ... --image-file ...`.

Upstream's arguments and behaviour (streamed answers, multi-turn, empty line or end of input exits),
reading from a terminal or from piped stdin. `ChatSession` is the code path the demo uses too.
"""
import sys
import time

import torch

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.conversation import SeparatorStyle, conv_templates
from llava.mm_utils import get_model_name_from_path, load_image, process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.pruning import add_pruning_args
from llava.settings import (check_device, check_generation, describe, note_nothing_pruned, resolve_pruning,
                            resolve_template)
from llava.utils import disable_torch_init, entry_parser


class ChatSession:
    """One image, many turns. The whole history is re-encoded each turn, as upstream does."""

    def __init__(self, tokenizer, model, image_processor, image, conv_mode, temperature=0.2, max_new_tokens=512):
        self.tokenizer, self.model = tokenizer, model
        self.conv = conv_templates[conv_mode].copy()
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.image_size = image.size
        images = process_images([image], image_processor, model.config)
        param = model.get_input_embeddings().weight
        if isinstance(images, list):
            self.images = [img.to(param.device, dtype=param.dtype) for img in images]
        else:
            self.images = images.to(param.device, dtype=param.dtype)
        self.image_pending = True
        self.last_timings = {}

    @property
    def roles(self):
        return ("user", "assistant") if self.conv.sep_style == SeparatorStyle.MPT else self.conv.roles

    def ask(self, text, streamer=None):
        """Add a user turn, generate the answer (streamed to `streamer` if given), return it."""
        if self.image_pending:
            image_token = DEFAULT_IMAGE_TOKEN
            if getattr(self.model.config, "mm_use_im_start_end", False):
                image_token = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN
            text = image_token + "\n" + text
            self.image_pending = False
        self.conv.append_message(self.conv.roles[0], text)
        self.conv.append_message(self.conv.roles[1], None)
        prompt = self.conv.get_prompt()
        device = self.model.get_input_embeddings().weight.device
        input_ids = tokenizer_image_token(prompt, self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        input_ids = input_ids.unsqueeze(0).to(device)
        do_sample = self.temperature > 0
        sampling = {"temperature": self.temperature} if do_sample else {"temperature": None, "top_p": None}
        start = time.perf_counter()
        with torch.inference_mode():
            output_ids = self.model.generate(
                input_ids,
                images=self.images,
                image_sizes=[self.image_size],
                do_sample=do_sample,
                max_new_tokens=self.max_new_tokens,
                streamer=streamer,
                use_cache=True,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        elapsed = time.perf_counter() - start
        # Stored without special tokens: upstream keeps "</s>" here and the template then adds another.
        answer = self.tokenizer.decode(output_ids[0], skip_special_tokens=True).strip()
        self.conv.messages[-1][-1] = answer
        self.last_timings = {"generate_s": elapsed, "new_tokens": int(output_ids.shape[1]), "prompt": prompt}
        return answer


def build_parser():
    parser = entry_parser("llava.serve.cli", __doc__)
    parser.add_argument("--model-path", type=str, default="facebook/opt-350m",
                        help="checkpoint folder, or a hub id already in the Hugging Face cache")
    parser.add_argument("--model-base", type=str, default=None,
                        help="the base LLM of a LoRA or projector-only checkpoint")
    parser.add_argument("--image-file", type=str, required=True, help="the image to talk about (path or URL)")
    parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda, cpu, mps, ...")
    parser.add_argument("--conv-mode", type=str, default=None,
                        help="conversation template (default: the one the checkpoint was trained with, else "
                             "inferred from the model name)")
    parser.add_argument("--temperature", type=float, default=0.2, help="sampling temperature; 0 answers greedily")
    parser.add_argument("--max-new-tokens", "--max_new_tokens", dest="max_new_tokens", type=int, default=512,
                        help="longest answer, in tokens")
    parser.add_argument("--load-8bit", action="store_true", help="8-bit weights (bitsandbytes, CUDA)")
    parser.add_argument("--load-4bit", action="store_true", help="4-bit NF4 weights (bitsandbytes, CUDA)")
    parser.add_argument("--vision-tower", type=str, default=None,
                        help="local folder (or hub id in the HF cache) overriding the config's mm_vision_tower")
    parser.add_argument("--debug", action="store_true", help="print the prompt and the answer after each turn")
    add_pruning_args(parser)
    return parser


def read_line(prompt):
    """input() that also works with piped stdin; None at end of input. On a terminal the line can be
    edited (arrow keys, history) and the prompt goes to standard output whatever standard error is."""
    if sys.stdin.isatty():
        import readline  # noqa: F401 (input() then uses it: line editing, prompt on stdout)
    try:
        return input(prompt)
    except EOFError:
        return None


def main(args):
    # every setting is checked, and the run described, before any weights are read
    check_generation(args)
    check_device(args.device)
    model_name = get_model_name_from_path(args.model_path)
    conv_mode, template_source = resolve_template(args.conv_mode, args.model_path, model_name)
    pruning = resolve_pruning(args, args.model_path)
    image = load_image(args.image_file)
    print(describe(args.model_path, conv_mode, template_source, pruning), file=sys.stderr)
    disable_torch_init()
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, args.model_base, model_name, args.load_8bit, args.load_4bit,
        device=args.device, vision_tower=args.vision_tower, pruning=pruning.config,
    )
    note_nothing_pruned(model, pruning.config)
    session = ChatSession(tokenizer, model, image_processor, image, conv_mode, args.temperature, args.max_new_tokens)

    from transformers import TextStreamer

    while True:
        text = read_line(f"{session.roles[0]}: ")
        if not text:
            print("exit...")
            break
        print(f"{session.roles[1]}: ", end="", flush=True)
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        answer = session.ask(text, streamer=streamer)
        if pruning.config.pruning_stats:
            for rec in model.pruning_records:
                summary = {k: v for k, v in rec.items() if k != "kept_indices"}
                print(f"[pruning-stats] {summary} kept={len(rec['kept_indices'] or [])}", file=sys.stderr)
            model.pruning_records.clear()
        if args.debug:
            print("\n", {"prompt": session.last_timings["prompt"], "outputs": answer}, "\n")
    return 0


def cli(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return main(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
