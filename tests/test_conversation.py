"""Prompt strings, written out literally: these are what upstream LLaVA builds for the same turns."""
import pytest

from llava.conversation import SeparatorStyle, auto_conv_mode, conv_templates, default_conversation

HUMAN_SYS = ("A chat between a curious human and an artificial intelligence assistant. "
             "The assistant gives helpful, detailed, and polite answers to the human's questions.")
USER_SYS = ("A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions.")
MMTAG_SYS = ("A chat between a curious user and an artificial intelligence assistant. The assistant is able to "
             "understand the visual content that the user provides, and assist the user with a variety of tasks "
             "using natural language.The visual content will be provided with the following format: "
             "<Image>visual content</Image>.")
LLAVA_L2_SYS = ("You are a helpful language and vision assistant. You are able to understand the visual content "
                "that the user provides, and assist the user with a variety of tasks using natural language.")

Q = "<image>\nWhat is this?"

SINGLE_TURN = {
    "vicuna_v1": f"{USER_SYS} USER: {Q} ASSISTANT:",
    "v1": f"{USER_SYS} USER: {Q} ASSISTANT:",
    "llava_v1": f"{HUMAN_SYS} USER: {Q} ASSISTANT:",
    "v1_mmtag": f"{MMTAG_SYS} USER: {Q} ASSISTANT:",
    "llava_v0": f"{HUMAN_SYS}###Human: {Q}###Assistant:",
    "v0_mmtag": f"{MMTAG_SYS}###Human: {Q}###Assistant:",
    "plain": Q + "\n",
    "v0_plain": Q + "\n",
    "llava_llama_2": f"[INST] <<SYS>>\n{LLAVA_L2_SYS}\n<</SYS>>\n\n{Q} [/INST]",
    "mistral_instruct": f"[INST] {Q} [/INST]",
    "chatml_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                     "<|im_start|>assistant\n",
    "mistral_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                      "<|im_start|>assistant\n",
    "mpt": "<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. The assistant gives "
           f"helpful and honest answers.<|im_end|><|im_start|>user\n{Q}<|im_end|><|im_start|>assistant\n",
}

TWO_TURNS = {
    "vicuna_v1": f"{USER_SYS} USER: {Q} ASSISTANT: A cat.</s>USER: Colour? ASSISTANT:",
    "llava_v0": f"{HUMAN_SYS}###Human: {Q}###Assistant: A cat.###Human: Colour?###Assistant:",
    "llava_llama_2": f"[INST] <<SYS>>\n{LLAVA_L2_SYS}\n<</SYS>>\n\n{Q} [/INST] A cat. </s><s>[INST] Colour? [/INST]",
    "mistral_instruct": f"[INST] {Q} [/INST] A cat. </s>[INST] Colour? [/INST]",
    "chatml_direct": f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n{Q}<|im_end|>"
                     "<|im_start|>assistant\nA cat.<|im_end|><|im_start|>user\nColour?<|im_end|><|im_start|>assistant\n",
}


def render(mode, turns):
    conv = conv_templates[mode].copy()
    for i, text in enumerate(turns):
        conv.append_message(conv.roles[i % 2], text)
    return conv.get_prompt()


@pytest.mark.parametrize("mode", sorted(SINGLE_TURN))
def test_single_turn_prompt(mode):
    assert render(mode, [Q, None]) == SINGLE_TURN[mode]


@pytest.mark.parametrize("mode", sorted(TWO_TURNS))
def test_two_turn_prompt(mode):
    assert render(mode, [Q, "A cat.", "Colour?", None]) == TWO_TURNS[mode]


def test_every_upstream_template_name_exists():
    expected = {"default", "v0", "v1", "vicuna_v1", "llama_2", "mistral_instruct", "chatml_direct", "mistral_direct",
                "plain", "v0_plain", "llava_v0", "v0_mmtag", "llava_v1", "v1_mmtag", "llava_llama_2", "mpt"}
    assert expected <= set(conv_templates)
    assert default_conversation is conv_templates["vicuna_v1"]


def test_v0_default_has_the_two_few_shot_messages():
    prompt = render("v0", [Q, None])
    assert prompt.startswith(HUMAN_SYS + "###Human: What are the key differences between renewable and "
                             "non-renewable energy sources?###Assistant: Renewable energy sources are")
    assert "6. Sustainability:" in prompt and prompt.endswith(f"instability.\n###Human: {Q}###Assistant:")
    assert conv_templates["v0"].offset == 2


def test_llama_2_system_prompt_is_metas():
    prompt = render("llama_2", ["Hi", None])
    assert prompt.startswith("[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as "
                             "helpfully as possible, while being safe.  Your answers should not include")
    assert prompt.endswith("please don't share false information.\n<</SYS>>\n\nHi [/INST]")


def test_image_tuple_first_message_is_rewritten():
    from PIL import Image

    image = Image.new("RGB", (10, 10))
    conv = conv_templates["llava_v1"].copy()
    conv.append_message("USER", ("What is this?\n<image>", image, "Default"))
    conv.append_message("ASSISTANT", None)
    assert conv.get_prompt() == f"{HUMAN_SYS} USER: <image>\nWhat is this? ASSISTANT:"
    tag = conv_templates["v1_mmtag"].copy()
    tag.append_message("USER", ("What is this?\n<image>", image, "Default"))
    tag.append_message("ASSISTANT", None)
    assert tag.get_prompt() == (f"{MMTAG_SYS} USER: <Image><image></Image> ASSISTANT: Received.</s>"
                                "USER: What is this? ASSISTANT:")
    assert len(conv.get_images(return_pil=True)) == 1


def test_copy_does_not_share_history():
    template = conv_templates["vicuna_v1"]
    conv = template.copy()
    conv.append_message("USER", "hi")
    assert len(template.messages) == 0 and len(template.copy().messages) == 0
    assert template.sep_style == SeparatorStyle.TWO


@pytest.mark.parametrize("name,mode", [
    ("llava-v1.5-7b", "llava_v1"), ("llava-v1.5-13b-lora", "llava_v1"), ("llava-v1.6-vicuna-7b", "llava_v1"),
    ("llava-v1.6-mistral-7b", "mistral_instruct"), ("llava-v1.6-34b", "chatml_direct"),
    ("llava-llama-2-13b-chat-lightning-preview", "llava_llama_2"), ("llava-mpt-7b", "mpt"), ("LLaVA-Lightning-7B", "llava_v0"),
])
def test_auto_conv_mode(name, mode):
    assert auto_conv_mode(name) == mode
