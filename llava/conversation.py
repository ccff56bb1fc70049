"""Conversation templates: upstream's names and byte-identical prompt strings (the strings are data)."""
import base64
import dataclasses
from enum import Enum, auto
from io import BytesIO
from typing import List, Optional, Tuple

from PIL import Image


class SeparatorStyle(Enum):
    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()


@dataclasses.dataclass
class Conversation:
    """Conversation history plus the template that renders it into a prompt."""

    system: str
    roles: Tuple[str, str]
    messages: List  # templates hold tuples; copy() makes a list of [role, message] lists
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: Optional[str] = None
    version: str = "Unknown"
    skip_next: bool = False

    def _rendered_messages(self):
        """[(role, text or None)] with upstream's rules for image tuples.

        A leading `(text, image, mode)` user turn loses its `<image>` markers and gets one back in front
        (`"<image>\n" + text`), or, for `mmtag` versions, two synthetic turns are put before it. Any other
        tuple contributes its text. A turn counts as present when its message is truthy (so an image tuple
        with empty text still renders, as upstream), otherwise it is the open turn to be generated (None).
        """
        messages = list(self.messages)
        if messages and isinstance(messages[0][1], tuple):
            role, first = messages[0]
            text = first[0].replace("<image>", "").strip()
            if "mmtag" in self.version:
                messages[0] = (role, text)
                messages[:0] = [(self.roles[0], "<Image><image></Image>"), (self.roles[1], "Received.")]
            else:
                messages[0] = (role, "<image>\n" + text)
        rendered = []
        for role, msg in messages:
            if not msg:
                msg = None
            elif isinstance(msg, tuple):
                msg = msg[0]
            rendered.append((role, msg))
        return rendered

    def get_prompt(self):
        """The prompt string, byte-identical to upstream LLaVA's for the same turns and template."""
        messages = self._rendered_messages()
        style = self.sep_style
        if style == SeparatorStyle.SINGLE:
            out = self.system + self.sep
            for role, msg in messages:
                out += role + ":" if msg is None else role + ": " + msg + self.sep
        elif style == SeparatorStyle.TWO:
            seps = (self.sep, self.sep2)
            out = self.system + seps[0]
            for i, (role, msg) in enumerate(messages):
                out += role + ":" if msg is None else role + ": " + msg + seps[i % 2]
        elif style == SeparatorStyle.MPT:
            out = self.system + self.sep
            for role, msg in messages:
                out += role if msg is None else role + msg + self.sep
        elif style == SeparatorStyle.LLAMA_2:
            out = ""
            for i, (role, msg) in enumerate(messages):
                if i == 0:
                    assert msg is not None, "first message should not be none"
                    assert role == self.roles[0], "first message should come from user"
                if msg is None:
                    continue
                if i == 0 and self.system:
                    msg = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n" + msg
                out += f"{self.sep}[INST] {msg} [/INST]" if i % 2 == 0 else f" {msg} {self.sep2}"
            out = out.lstrip(self.sep)  # a character set, as upstream: drops the leading "<s>"
        elif style == SeparatorStyle.PLAIN:
            # upstream's plain template has sep2=None and raises on a filled assistant turn; we end it with sep
            seps = (self.sep, self.sep if self.sep2 is None else self.sep2)
            out = self.system
            for i, (_, msg) in enumerate(messages):
                if msg is not None:
                    out += msg + seps[i % 2]
        else:
            raise ValueError(f"Invalid style: {self.sep_style}")
        return out

    def append_message(self, role, message):
        """Add a turn; `message` is a string, None (the turn to generate) or (text, PIL image, mode)."""
        self.messages.append([role, message])

    def process_image(self, image, image_process_mode, return_pil=False, image_format="PNG", max_len=1344, min_len=672):
        """Gradio-side image handling: Pad / Resize / Default / Crop, then cap the longest side at max_len."""
        if image_process_mode == "Pad":
            from llava.mm_utils import expand2square  # lazy: keeps this module free of torch

            image = expand2square(image, (122, 116, 104))
        elif image_process_mode in ("Default", "Crop"):
            pass
        elif image_process_mode == "Resize":
            image = image.resize((336, 336))
        else:
            raise ValueError(f"Invalid image_process_mode: {image_process_mode}")
        if max(image.size) > max_len:
            max_hw, min_hw = max(image.size), min(image.size)
            aspect_ratio = max_hw / min_hw
            shortest_edge = int(min(max_len / aspect_ratio, min_len, min_hw))
            longest_edge = int(shortest_edge * aspect_ratio)
            width, height = image.size
            image = image.resize((shortest_edge, longest_edge) if height > width else (longest_edge, shortest_edge))
        if return_pil:
            return image
        buffered = BytesIO()
        image.save(buffered, format=image_format)
        return base64.b64encode(buffered.getvalue()).decode()

    def get_images(self, return_pil=False):
        """Images of the user turns (after `offset`), processed by `process_image`: PIL or base64 strings."""
        images = []
        for i, (_, msg) in enumerate(self.messages[self.offset :]):
            if i % 2 == 0 and isinstance(msg, tuple):
                _, image, mode = msg
                images.append(self.process_image(image, mode, return_pil=return_pil))
        return images

    def to_gradio_chatbot(self):
        """[[user, assistant], ...] pairs for a Gradio Chatbot; an image turn becomes an inline JPEG + its text."""
        out = []
        for i, (_, msg) in enumerate(self.messages[self.offset :]):
            if i % 2 == 0:
                if isinstance(msg, tuple):
                    text, image, _ = msg
                    b64 = self.process_image(image, "Default", return_pil=False, image_format="JPEG")
                    img = f'<img src="data:image/jpeg;base64,{b64}" alt="user upload image" />'
                    msg = img + text.replace("<image>", "").strip()
                out.append([msg, None])
            else:
                out[-1][-1] = msg
        return out

    def copy(self):
        """A new conversation with its own list of [role, message] lists (templates hold tuples)."""
        return Conversation(
            system=self.system,
            roles=self.roles,
            messages=[[role, msg] for role, msg in self.messages],
            offset=self.offset,
            sep_style=self.sep_style,
            sep=self.sep,
            sep2=self.sep2,
            version=self.version,
        )

    def dict(self):
        """JSON-friendly form (image tuples reduced to their text), as the Gradio server logs it."""
        messages = self.messages
        if any(isinstance(msg, tuple) for i, (_, msg) in enumerate(self.messages[self.offset :]) if i % 2 == 0):
            messages = [[role, msg[0] if isinstance(msg, tuple) else msg] for role, msg in self.messages]
        return {"system": self.system, "roles": self.roles, "messages": messages, "offset": self.offset,
                "sep": self.sep, "sep2": self.sep2}


SYSTEM_HUMAN = ("A chat between a curious human and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the human's questions.")
SYSTEM_USER = ("A chat between a curious user and an artificial intelligence assistant. "
               "The assistant gives helpful, detailed, and polite answers to the user's questions.")
SYSTEM_MMTAG = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant is able to understand the visual content that the user provides, and assist the "
                "user with a variety of tasks using natural language."
                "The visual content will be provided with the following format: <Image>visual content</Image>.")
SYSTEM_LLAMA_2 = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information."
)
SYSTEM_LLAVA_LLAMA_2 = ("You are a helpful language and vision assistant. "
                        "You are able to understand the visual content that the user provides, "
                        "and assist the user with a variety of tasks using natural language.")
CHATML_ROLES = ("<|im_start|>user\n", "<|im_start|>assistant\n")

conv_vicuna_v0 = Conversation(
    system=SYSTEM_HUMAN,
    roles=("Human", "Assistant"),
    messages=(
        ("Human", "What are the key differences between renewable and non-renewable energy sources?"),
        ("Assistant",
         "Renewable energy sources are those that can be replenished naturally in a relatively "
         "short amount of time, such as solar, wind, hydro, geothermal, and biomass. "
         "Non-renewable energy sources, on the other hand, are finite and will eventually be "
         "depleted, such as coal, oil, and natural gas. Here are some key differences between "
         "renewable and non-renewable energy sources:\n"
         "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable "
         "energy sources are finite and will eventually run out.\n"
         "2. Environmental impact: Renewable energy sources have a much lower environmental impact "
         "than non-renewable sources, which can lead to air and water pollution, greenhouse gas emissions, "
         "and other negative effects.\n"
         "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically "
         "have lower operational costs than non-renewable sources.\n"
         "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote "
         "locations than non-renewable sources.\n"
         "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different "
         "situations and needs, while non-renewable sources are more rigid and inflexible.\n"
         "6. Sustainability: Renewable energy sources are more sustainable over the long term, while "
         "non-renewable sources are not, and their depletion can lead to economic and social instability.\n"),
    ),
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)
conv_vicuna_v1 = Conversation(system=SYSTEM_USER, roles=("USER", "ASSISTANT"), version="v1", messages=(), offset=0,
                              sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>")
conv_llama_2 = Conversation(system=SYSTEM_LLAMA_2, roles=("USER", "ASSISTANT"), version="llama_v2", messages=(),
                            offset=0, sep_style=SeparatorStyle.LLAMA_2, sep="<s>", sep2="</s>")
conv_llava_llama_2 = Conversation(system=SYSTEM_LLAVA_LLAMA_2, roles=("USER", "ASSISTANT"), version="llama_v2",
                                  messages=(), offset=0, sep_style=SeparatorStyle.LLAMA_2, sep="<s>", sep2="</s>")
conv_mistral_instruct = Conversation(system="", roles=("USER", "ASSISTANT"), version="llama_v2", messages=(), offset=0,
                                     sep_style=SeparatorStyle.LLAMA_2, sep="", sep2="</s>")
conv_chatml_direct = Conversation(system="<|im_start|>system\nAnswer the questions.", roles=CHATML_ROLES,
                                  version="mpt", messages=(), offset=0, sep_style=SeparatorStyle.MPT, sep="<|im_end|>")
conv_mpt = Conversation(
    system="<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
           "The assistant gives helpful and honest answers.",
    roles=CHATML_ROLES, version="mpt", messages=(), offset=0, sep_style=SeparatorStyle.MPT, sep="<|im_end|>")
conv_llava_plain = Conversation(system="", roles=("", ""), messages=(), offset=0, sep_style=SeparatorStyle.PLAIN,
                                sep="\n")
conv_llava_v0 = Conversation(system=SYSTEM_HUMAN, roles=("Human", "Assistant"), messages=(), offset=0,
                             sep_style=SeparatorStyle.SINGLE, sep="###")
conv_llava_v0_mmtag = Conversation(system=SYSTEM_MMTAG, roles=("Human", "Assistant"), messages=(), offset=0,
                                   sep_style=SeparatorStyle.SINGLE, sep="###", version="v0_mmtag")
conv_llava_v1 = Conversation(system=SYSTEM_HUMAN, roles=("USER", "ASSISTANT"), version="v1", messages=(), offset=0,
                             sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>")
conv_llava_v1_mmtag = Conversation(system=SYSTEM_MMTAG, roles=("USER", "ASSISTANT"), messages=(), offset=0,
                                   sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>", version="v1_mmtag")

default_conversation = conv_vicuna_v1
conv_templates = {
    "default": conv_vicuna_v0,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llama_2": conv_llama_2,
    "mistral_instruct": conv_mistral_instruct,
    "chatml_direct": conv_chatml_direct,
    "mistral_direct": conv_chatml_direct,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "llava_v0": conv_llava_v0,
    "v0_mmtag": conv_llava_v0_mmtag,
    "llava_v1": conv_llava_v1,
    "v1_mmtag": conv_llava_v1_mmtag,
    "llava_llama_2": conv_llava_llama_2,
    "mpt": conv_mpt,
}


def auto_conv_mode(model_name):
    """The template upstream's CLI and run_llava pick from a model name (first match wins)."""
    name = model_name.lower()
    for key, mode in (("llama-2", "llava_llama_2"), ("mistral", "mistral_instruct"), ("v1.6-34b", "chatml_direct"),
                      ("v1", "llava_v1"), ("mpt", "mpt")):
        if key in name:
            return mode
    return "llava_v0"
