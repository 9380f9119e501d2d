"""The prompt around a task's text: the tokenizer's chat template for Instruct models.

The user turn holds the instruction, the haystack and the question; the assistant turn is opened
(``add_generation_prompt``) and the answer is what the model generates there. For Qwen2.5 Instruct:

    <|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n{instruction}\\n\\n{haystack}\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

(code haystacks are fenced: ```` ```python\\n{haystack}```\\n ````). A tokenizer without a chat
template (the tiny test pair's byte tokenizer) gets ``{user turn}\\nAnswer:``.
"""

from __future__ import annotations

from dataclasses import dataclass

SENTINEL = "\x00specattn-user-turn\x00"
PLAIN = ("", "\nAnswer:")
FENCES = {"code": ("```python\n", "```\n"), "prose": ("", "")}


def chat_frame(tokenizer) -> tuple[str, str]:
    """The template's text before and after the user message (generation prompt included)."""
    if not getattr(tokenizer, "chat_template", None):
        return PLAIN
    text = tokenizer.apply_chat_template([{"role": "user", "content": SENTINEL}], tokenize=False,
                                         add_generation_prompt=True)
    before, found, after = text.partition(SENTINEL)
    assert found, "the chat template dropped the user message"
    return before, after


@dataclass(frozen=True)
class Frame:
    """The text before and after a haystack for one task instance."""

    head: str
    tail: str


def frame(tokenizer, haystack: str, instruction: str, question: str) -> Frame:
    """Head: template opening, instruction, opening fence; tail: closing fence, question, template end."""
    before, after = chat_frame(tokenizer)
    open_fence, close_fence = FENCES[haystack]
    return Frame(f"{before}{instruction}\n\n{open_fence}", f"{close_fence}\n{question}{after}")
