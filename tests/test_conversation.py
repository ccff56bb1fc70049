"""Prompt strings, written out literally: these are what upstream LLaVA builds for the same turns."""
import base64
from io import BytesIO

import pytest
from PIL import Image

from llava.conversation import Conversation, SeparatorStyle, auto_conv_mode, conv_templates, default_conversation

HUMAN_SYS = ("A chat between a curious human and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the human's questions.")
USER_SYS = ("A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions.")
MMTAG_SYS = ("A chat between a curious user and an artificial intelligence assistant. The assistant is able to "
             "understand the visual content that the user provides, and assist the user with a variety of tasks "
             "using natural language.The visual content will be provided with the following format: "
             "<Image>visual content</Image>.")
LLAMA2_SYS = ("You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while "
              "being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, "
              "or illegal content. Please ensure that your responses are socially unbiased and positive in nature."
              "\n\nIf a question does not make any sense, or is not factually coherent, explain why instead of "
              "answering something not correct. If you don't know the answer to a question, please don't share "
              "false information.")
LLAVA_L2_SYS = ("You are a helpful language and vision assistant. You are able to understand the visual content "
                "that the user provides, and assist the user with a variety of tasks using natural language.")
MPT_SYS = ("<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
           "The assistant gives helpful and honest answers.")
V0_Q = "What are the key differences between renewable and non-renewable energy sources?"
V0_A = ("Renewable energy sources are those that can be replenished naturally in a relatively short amount of time, "
        "such as solar, wind, hydro, geothermal, and biomass. Non-renewable energy sources, on the other hand, are "
        "finite and will eventually be depleted, such as coal, oil, and natural gas. Here are some key differences "
        "between renewable and non-renewable energy sources:\n"
        "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable energy sources "
        "are finite and will eventually run out.\n"
        "2. Environmental impact: Renewable energy sources have a much lower environmental impact than non-renewable "
        "sources, which can lead to air and water pollution, greenhouse gas emissions, and other negative effects.\n"
        "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically have lower "
        "operational costs than non-renewable sources.\n"
        "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote locations "
        "than non-renewable sources.\n"
        "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different situations "
        "and needs, while non-renewable sources are more rigid and inflexible.\n"
        "6. Sustainability: Renewable energy sources are more sustainable over the long term, while non-renewable "
        "sources are not, and their depletion can lead to economic and social instability.\n")
V0_HEAD = f"{HUMAN_SYS}###Human: {V0_Q}###Assistant: {V0_A}###"

Q = "<image>\nWhat is this?"
Q2 = "What colour is it?"

# [Q, None]
SINGLE_TURN = {
    "default": f"{V0_HEAD}Human: {Q}###Assistant:",
    "v0": f"{V0_HEAD}Human: {Q}###Assistant:",
    "vicuna_v1": f"{USER_SYS} USER: {Q} ASSISTANT:",
    "v1": f"{USER_SYS} USER: {Q} ASSISTANT:",
    "llava_v1": f"{HUMAN_SYS} USER: {Q} ASSISTANT:",
    "v1_mmtag": f"{MMTAG_SYS} USER: {Q} ASSISTANT:",
    "llava_v0": f"{HUMAN_SYS}###Human: {Q}###Assistant:",
    "v0_mmtag": f"{MMTAG_SYS}###Human: {Q}###Assistant:",
    "plain": "<image>\nWhat is this?\n",
    "v0_plain": "<image>\nWhat is this?\n",
    "llama_2": f"[INST] <<SYS>>\n{LLAMA2_SYS}\n<</SYS>>\n\n{Q} [/INST]",
    "llava_llama_2": f"[INST] <<SYS>>\n{LLAVA_L2_SYS}\n<</SYS>>\n\n{Q} [/INST]",
    "mistral_instruct": f"[INST] {Q} [/INST]",
    "chatml_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                     "<|im_start|>assistant\n",
    "mistral_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                      "<|im_start|>assistant\n",
    "mpt": f"{MPT_SYS}<|im_end|><|im_start|>user\n{Q}<|im_end|><|im_start|>assistant\n",
}

# [Q, "A cat.", Q2, None]
TWO_TURNS = {
    "default": f"{V0_HEAD}Human: {Q}###Assistant: A cat.###Human: {Q2}###Assistant:",
    "v0": f"{V0_HEAD}Human: {Q}###Assistant: A cat.###Human: {Q2}###Assistant:",
    "vicuna_v1": f"{USER_SYS} USER: {Q} ASSISTANT: A cat.</s>USER: {Q2} ASSISTANT:",
    "v1": f"{USER_SYS} USER: {Q} ASSISTANT: A cat.</s>USER: {Q2} ASSISTANT:",
    "llava_v1": f"{HUMAN_SYS} USER: {Q} ASSISTANT: A cat.</s>USER: {Q2} ASSISTANT:",
    "v1_mmtag": f"{MMTAG_SYS} USER: {Q} ASSISTANT: A cat.</s>USER: {Q2} ASSISTANT:",
    "llava_v0": f"{HUMAN_SYS}###Human: {Q}###Assistant: A cat.###Human: {Q2}###Assistant:",
    "v0_mmtag": f"{MMTAG_SYS}###Human: {Q}###Assistant: A cat.###Human: {Q2}###Assistant:",
    # upstream raises TypeError here (plain has sep2=None); ours ends the reply with sep
    "plain": "<image>\nWhat is this?\nA cat.\nWhat colour is it?\n",
    "v0_plain": "<image>\nWhat is this?\nA cat.\nWhat colour is it?\n",
    "llama_2": f"[INST] <<SYS>>\n{LLAMA2_SYS}\n<</SYS>>\n\n{Q} [/INST] A cat. </s><s>[INST] {Q2} [/INST]",
    "llava_llama_2": f"[INST] <<SYS>>\n{LLAVA_L2_SYS}\n<</SYS>>\n\n{Q} [/INST] A cat. </s><s>[INST] {Q2} [/INST]",
    "mistral_instruct": f"[INST] {Q} [/INST] A cat. </s>[INST] {Q2} [/INST]",
    "chatml_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                     f"<|im_start|>assistant\nA cat.<|im_end|><|im_start|>user\n{Q2}<|im_end|><|im_start|>assistant\n",
    "mistral_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                      f"<|im_start|>assistant\nA cat.<|im_end|><|im_start|>user\n{Q2}<|im_end|><|im_start|>assistant\n",
    "mpt": f"{MPT_SYS}<|im_end|><|im_start|>user\n{Q}<|im_end|><|im_start|>assistant\nA cat.<|im_end|>"
           f"<|im_start|>user\n{Q2}<|im_end|><|im_start|>assistant\n",
}

# [Q, "A cat."]: a finished exchange, as training renders it
FINISHED = {
    "vicuna_v1": f"{USER_SYS} USER: {Q} ASSISTANT: A cat.</s>",
    "llava_v0": f"{HUMAN_SYS}###Human: {Q}###Assistant: A cat.###",
    "llava_llama_2": f"[INST] <<SYS>>\n{LLAVA_L2_SYS}\n<</SYS>>\n\n{Q} [/INST] A cat. </s>",
    "mistral_instruct": f"[INST] {Q} [/INST] A cat. </s>",
    "mpt": f"{MPT_SYS}<|im_end|><|im_start|>user\n{Q}<|im_end|><|im_start|>assistant\nA cat.<|im_end|>",
    "plain": "<image>\nWhat is this?\nA cat.\n",
}

UPSTREAM_KEYS = {"default", "v0", "v1", "vicuna_v1", "llama_2", "mistral_instruct", "chatml_direct", "mistral_direct",
                 "plain", "v0_plain", "llava_v0", "v0_mmtag", "llava_v1", "v1_mmtag", "llava_llama_2", "mpt"}


def render(mode, turns):
    conv = conv_templates[mode].copy()
    for i, text in enumerate(turns):
        conv.append_message(conv.roles[i % 2], text)
    return conv.get_prompt()


def test_tables_cover_every_template():
    assert set(conv_templates) == UPSTREAM_KEYS
    assert set(SINGLE_TURN) == set(TWO_TURNS) == UPSTREAM_KEYS
    assert default_conversation is conv_templates["vicuna_v1"]
    assert conv_templates["default"] is conv_templates["v0"]  # upstream's two different "defaults"


@pytest.mark.parametrize("mode", sorted(SINGLE_TURN))
def test_single_turn_prompt(mode):
    assert render(mode, [Q, None]) == SINGLE_TURN[mode]


@pytest.mark.parametrize("mode", sorted(TWO_TURNS))
def test_two_turn_prompt(mode):
    assert render(mode, [Q, "A cat.", Q2, None]) == TWO_TURNS[mode]


@pytest.mark.parametrize("mode", sorted(FINISHED))
def test_finished_exchange(mode):
    assert render(mode, [Q, "A cat."]) == FINISHED[mode]


def test_template_fields():
    t = conv_templates
    assert [m.name for m in SeparatorStyle] == ["SINGLE", "TWO", "MPT", "PLAIN", "LLAMA_2"]
    assert (t["vicuna_v1"].sep_style, t["vicuna_v1"].sep, t["vicuna_v1"].sep2) == (SeparatorStyle.TWO, " ", "</s>")
    assert t["vicuna_v1"].version == "v1" and t["llava_v1"].version == "v1" and t["v1_mmtag"].version == "v1_mmtag"
    assert t["llama_2"].version == t["llava_llama_2"].version == t["mistral_instruct"].version == "llama_v2"
    assert (t["mistral_instruct"].sep, t["mistral_instruct"].sep2) == ("", "</s>")
    assert t["mpt"].version == t["chatml_direct"].version == "mpt" and t["mpt"].sep == "<|im_end|>"
    assert t["plain"].sep_style == SeparatorStyle.PLAIN and t["plain"].sep == "\n" and t["plain"].sep2 is None
    assert t["llava_v0"].version == "Unknown" and t["v0_mmtag"].version == "v0_mmtag"
    assert t["v0"].offset == 2 and len(t["v0"].messages) == 2 and t["vicuna_v1"].offset == 0


def test_llama_2_rules():
    # the system block is only added when the system prompt is non-empty; the first turn must be a user turn
    assert render("mistral_instruct", ["Hi", None]) == "[INST] Hi [/INST]"
    with pytest.raises(AssertionError):
        render("llama_2", [None])
    conv = conv_templates["llama_2"].copy()
    conv.append_message("ASSISTANT", "Hi")
    with pytest.raises(AssertionError):
        conv.get_prompt()


def test_empty_message_is_the_open_turn():
    assert render("vicuna_v1", [Q, ""]) == f"{USER_SYS} USER: {Q} ASSISTANT:"


def test_image_tuple_first_message_is_rewritten():
    image = Image.new("RGB", (10, 10))
    conv = conv_templates["llava_v1"].copy()
    conv.append_message("USER", ("What is this?\n<image>", image, "Default"))
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == f"{HUMAN_SYS} USER: <image>\nWhat is this? ASSISTANT:"
    assert isinstance(conv.messages[0][1], tuple)  # rendering does not change the history
    tag = conv_templates["v1_mmtag"].copy()
    tag.append_message("USER", ("What is this?\n<image>", image, "Default"))
    tag.append_message("ASSISTANT", None)
    assert tag.get_prompt() == (f"{MMTAG_SYS} USER: <Image><image></Image> ASSISTANT: Received.</s>"
                                "USER: What is this? ASSISTANT:")
    v0tag = conv_templates["v0_mmtag"].copy()
    v0tag.append_message("Human", ("<image>", image, "Pad"))
    v0tag.append_message("Assistant", None)
    # the image-only turn is left as its (empty) text, which renders like an open turn, as upstream
    assert v0tag.get_prompt() == (f"{MMTAG_SYS}###Human: <Image><image></Image>###Assistant: Received.###"
                                  "Human:Assistant:")
    other = conv_templates["llava_v0"].copy()
    other.append_message("Human", "Hi")
    other.append_message("Assistant", "Hello.")
    other.append_message("Human", ("", image, "Pad"))  # a later image tuple counts as a present turn
    other.append_message("Assistant", None)
    assert other.get_prompt() == f"{HUMAN_SYS}###Human: Hi###Assistant: Hello.###Human: ###Assistant:"
    chatml = conv_templates["chatml_direct"].copy()
    chatml.append_message(chatml.roles[0], ("Describe.", image, "Default"))
    chatml.append_message(chatml.roles[1], None)
    assert chatml.get_prompt() == ("<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n"
                                   "<image>\nDescribe.<|im_end|><|im_start|>assistant\n")


def test_images_gradio_and_dict():
    image = Image.new("RGB", (3000, 1000), (255, 0, 0))
    conv = conv_templates["llava_v1"].copy()
    conv.append_message("USER", ("<image>\nWhat is this?", image, "Default"))
    conv.append_message("ASSISTANT", "A red box.")
    (pil,) = conv.get_images(return_pil=True)
    assert pil.size == (1344, 448)  # longest side capped at 1344, aspect kept
    (b64,) = conv.get_images()
    assert Image.open(BytesIO(base64.b64decode(b64))).size == (1344, 448)
    chat = conv.to_gradio_chatbot()
    assert len(chat) == 1 and chat[0][1] == "A red box."
    assert chat[0][0].startswith('<img src="data:image/jpeg;base64,') and chat[0][0].endswith("/>What is this?")
    d = conv.dict()
    assert d["messages"] == [["USER", "<image>\nWhat is this?"], ["ASSISTANT", "A red box."]]
    assert (d["sep"], d["sep2"], d["offset"]) == (" ", "</s>", 0)
    assert conv_templates["vicuna_v1"].copy().dict()["messages"] == []


def test_process_image_modes():
    conv = conv_templates["llava_v1"]
    wide = Image.new("RGB", (40, 20), (255, 255, 255))
    padded = conv.process_image(wide, "Pad", return_pil=True)
    assert padded.size == (40, 40) and padded.getpixel((0, 0)) == (122, 116, 104)
    assert conv.process_image(wide, "Resize", return_pil=True).size == (336, 336)
    assert conv.process_image(wide, "Crop", return_pil=True).size == (40, 20)
    tall = Image.new("RGB", (500, 2000))
    assert conv.process_image(tall, "Default", return_pil=True).size == (336, 1344)
    with pytest.raises(ValueError):
        conv.process_image(wide, "Stretch")


def test_copy_does_not_share_history():
    template = conv_templates["vicuna_v1"]
    conv = template.copy()
    conv.append_message("USER", "hi")
    assert len(template.messages) == 0 and len(template.copy().messages) == 0
    v0 = conv_templates["v0"].copy()
    assert isinstance(v0, Conversation) and v0.messages == [list(m) for m in conv_templates["v0"].messages]
    v0.messages[0][1] = "changed"
    assert conv_templates["v0"].messages[0][1] == V0_Q
    assert (v0.sep_style, v0.sep, v0.sep2, v0.version, v0.offset) == (SeparatorStyle.SINGLE, "###", None, "Unknown", 2)


@pytest.mark.parametrize("name,mode", [
    ("llava-v1.5-7b", "llava_v1"), ("llava-v1.5-7b-lora", "llava_v1"), ("LLaVA-V1.5-13B", "llava_v1"),
    ("llava-v1.6-vicuna-7b", "llava_v1"), ("llava-v1.6-mistral-7b", "mistral_instruct"),
    ("llava-v1.6-34b", "chatml_direct"), ("llava-llama-2-13b-chat", "llava_llama_2"),
    ("llava-llama-2-13b-chat-lightning-preview", "llava_llama_2"), ("llava-mpt-7b", "mpt"),
    ("LLaVA-Lightning-7B", "llava_v0"), ("llava-v1.5-7b_checkpoint-500", "llava_v1"),
])
def test_auto_conv_mode(name, mode):
    assert auto_conv_mode(name) == mode
    assert mode in conv_templates
