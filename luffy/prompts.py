"""Prompt templates shared by data preparation, training and evaluation.

``LUFFY_SYSTEM_PROMPT`` is byte-identical to the system turn of the evaluation sets
(``valid*.parquet``): a prompt built here must match theirs exactly.
"""

LUFFY_SYSTEM_PROMPT = (
    "Your task is to follow a systematic, thorough reasoning process before providing the final "
    "solution. This involves analyzing, summarizing, exploring, reassessing, and refining your thought "
    "process through multiple iterations. Structure your response into two sections: Thought and "
    'Solution. In the Thought section, present your reasoning using the format: "<think>\n {thoughts} '
    '</think>\n". Each thought should include detailed analysis, brainstorming, verification, and '
    'refinement of ideas. After "</think>\n," in the Solution section, provide the final, logical, and '
    "accurate answer, clearly derived from the exploration in the Thought section. If applicable, "
    "include the answer in \\boxed{} for closed-form results like multiple choices or mathematical "
    "solutions."
)

PRIME_SYSTEM_PROMPT = (
    "When tackling complex reasoning tasks, you have access to the following actions. Use them as "
    "needed to progress through your thought process.\n\n[ASSESS]\n\n[ADVANCE]\n\n[VERIFY]\n\n"
    "[SIMPLIFY]\n\n[SYNTHESIZE]\n\n[PIVOT]\n\n[OUTPUT]\n\nYou should strictly follow the format below:"
    "\n\n[ACTION NAME]\n\n# Your action step 1\n\n# Your action step 2\n\n# Your action step 3\n\n...\n\n"
    "Next action: [NEXT ACTION NAME]\n"
)
"""System prompt of the Eurus-2 PRIME-Zero models (``--template prime``)."""

PRIME_USER_SUFFIX = "\n\nPresent the answer in LaTex format: \\boxed{Your answer}"
"""Appended to the question under ``--template prime``."""

QWEN_MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
"""Qwen2.5-Math's chain-of-thought system prompt (``--template qwen``)."""

TEMPLATES = ("own", "prime", "qwen", "no")
"""Prompt templates understood by the evaluation scripts."""


def build_messages(question: str, template: str, remove_system: bool = False) -> list[dict[str, str]]:
    """Chat messages for ``question`` under ``template`` (see ``TEMPLATES``).

    ``own`` reproduces the evaluation parquet prompt exactly: ``[system=LUFFY_SYSTEM_PROMPT,
    user=question]``. ``no`` is the bare question as a single user turn (callers that want no chat
    template at all use the question text directly). ``remove_system`` drops the system turn.
    """
    if template == "own":
        messages = [
            {"role": "system", "content": LUFFY_SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
    elif template == "prime":
        messages = [
            {"role": "system", "content": PRIME_SYSTEM_PROMPT},
            {"role": "user", "content": question + PRIME_USER_SUFFIX},
        ]
    elif template == "qwen":
        messages = [
            {"role": "system", "content": QWEN_MATH_SYSTEM_PROMPT},
            {"role": "user", "content": question},
        ]
    elif template == "no":
        messages = [{"role": "user", "content": question}]
    else:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    if remove_system:
        messages = [m for m in messages if m["role"] != "system"]
    return messages
