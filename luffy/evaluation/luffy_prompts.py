"""Prompts as LUFFY's evaluation script builds them (``--protocol luffy``).

LUFFY always drops the evaluation set's system turn; its templates then give, for a question ``q``:

=============  ===================================================================================
``own``        the model's chat template on the user turn alone
``simplerl``   a fixed ChatML text: system "You are a helpful assistant.", ``q`` plus a step-by-step
               instruction (with LUFFY's literal ``\\boxed{{}}``)
``qwen``       a fixed ChatML text with Qwen2.5-Math's step-by-step system prompt
``prime``      a plain "conversation between User and Assistant" text (no chat template), asking for
               ``<think>``/``<answer>`` tags and a boxed LaTeX answer
``prime_sft``  the chat template on one user turn: ``q`` plus "Present the answer in LaTex format"
``prime_code`` the ``prime`` conversation asking for Python code instead
``no``         ``q`` itself
=============  ===================================================================================

The texts are LUFFY's prompt strings, byte for byte: a different prompt gives different numbers.
"""

from __future__ import annotations

from typing import Any

from luffy.data.errors import LuffyDataError
from luffy.evaluation.engines import render_prompt
from luffy.prompts import PRIME_USER_SUFFIX, QWEN_MATH_SYSTEM_PROMPT

LUFFY_TEMPLATES = ("own", "simplerl", "qwen", "prime", "prime_sft", "prime_code", "no")
"""Template names of LUFFY's evaluation script."""

_ZERO_CONVERSATION = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {question}. Assistant:"
)
_CODE_SUFFIX = (
    "\n\nWrite Python code to solve the problem. Present the code in \n```python\nYour code\n```\nat the end."
)
# LUFFY writes "{{}}" in a plain (not format) string, so its prompt holds the two braces literally.
_SIMPLERL_SUFFIX = "\nPlease reason step by step, and put your final answer within\\boxed{{}}."


def _chatml(system: str, user: str) -> str:
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def _chat(tokenizer: Any, content: str, template: str) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise LuffyDataError(f"the tokenizer has no chat template, which LUFFY's template {template!r} applies")
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_luffy_prompt(tokenizer: Any, question: str, template: str) -> str:
    """The prompt text LUFFY's script generates from for ``question`` (its user turn) under ``template``."""
    if template == "own":
        return _chat(tokenizer, question, template)
    if template == "simplerl":
        return _chatml("You are a helpful assistant.", question + _SIMPLERL_SUFFIX)
    if template == "qwen":
        return _chatml(QWEN_MATH_SYSTEM_PROMPT, question)
    if template == "prime":
        return _ZERO_CONVERSATION.format(question=question + PRIME_USER_SUFFIX)
    if template == "prime_sft":
        return _chat(tokenizer, question + PRIME_USER_SUFFIX, template)
    if template == "prime_code":
        return _ZERO_CONVERSATION.format(question=question + _CODE_SUFFIX)
    if template == "no":
        return question
    choices = ", ".join(LUFFY_TEMPLATES)
    raise LuffyDataError(f"unknown template {template!r} for --protocol luffy; choose one of {choices}")


def render_for_protocol(tokenizer: Any, question: str, template: str, remove_system: bool, protocol: str) -> str:
    """The prompt text under ``protocol``: LUFFY's templates for ``luffy``, :func:`render_prompt` otherwise."""
    if protocol == "luffy":
        return render_luffy_prompt(tokenizer, question, template)
    return render_prompt(tokenizer, question, template, remove_system)
