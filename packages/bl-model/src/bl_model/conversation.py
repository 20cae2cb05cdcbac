"""Conversation templates (LLaVA's `vicuna_v1` and stage-1 `plain`) that render text and supervised spans.

A template renders alternating human/assistant messages to one prompt string and reports the character
spans the loss is computed on (each assistant message plus its closing separator), so that the processor
can derive labels from the tokenizer's offsets instead of re-tokenising pieces. `VICUNA_V1_CHAT_TEMPLATE` is the
`vicuna_v1` template in Jinja, for transformers' `apply_chat_template`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MEDIA_TOKEN = "<media>"
"""The single added token each `<image>`/`<video>` placeholder is written as before expansion."""


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt, the `[start, end)` character spans that carry labels, and where each answer starts.

    As LLaVA's masking (which ignores the instruction up to the assistant role's colon), a `two`-style span
    starts at the space before its answer, so a lone "▁" token there is supervised too.
    """

    text: str
    supervised_spans: tuple[tuple[int, int], ...]
    answer_starts: tuple[int, ...]


@dataclass(frozen=True)
class ConversationTemplate:
    """A LLaVA conversation template.

    `style="two"` is LLaVA's `SeparatorStyle.TWO`:
    `system + sep + "USER: q1" + sep + "ASSISTANT: a1" + sep2 + "USER: q2" + sep + ...`; an empty message is
    written as its role and colon alone (`"ASSISTANT:USER: q2"`), with no separator and no supervised span.
    `style="plain"` is LLaVA's stage-1 `conv_llava_plain`: each human message is reduced to its media tokens,
    followed by the answer and `sep2` ("\\n"); roles and system text are not written.
    """

    name: str
    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str
    style: Literal["two", "plain"]

    def render(self, messages: Sequence[str], system: str | None = None) -> RenderedPrompt:
        """Render alternating human/assistant `messages` (human first).

        With an odd number of messages the prompt ends with an open assistant turn (`"ASSISTANT:"` for
        `vicuna_v1`, nothing for `plain`), ready for generation. `system` overrides the template's system text.
        """
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        answer_starts: list[int] = []
        length = 0

        def write(piece: str) -> None:
            nonlocal length
            parts.append(piece)
            length += len(piece)

        if self.style == "two":
            write((self.system if system is None else system) + self.sep)
        for i, message in enumerate(messages):
            if i % 2 == 0:
                if self.style == "two":
                    write(f"{self.roles[0]}: {message}{self.sep}" if message else f"{self.roles[0]}:")
                else:
                    write(MEDIA_TOKEN * message.count(MEDIA_TOKEN) + self.sep)
                continue
            if self.style == "two":
                write(f"{self.roles[1]}:")
                if not message:  # written as its role alone, no separator: nothing to supervise
                    answer_starts.append(length)
                    continue
            start = length
            if self.style == "two":
                write(" ")
            answer_starts.append(length)
            write(message + self.sep2)
            spans.append((start, length))
        if len(messages) % 2 == 1 and self.style == "two":
            write(f"{self.roles[1]}:")
        return RenderedPrompt("".join(parts), tuple(spans), tuple(answer_starts))


TEMPLATES: dict[str, ConversationTemplate] = {
    "vicuna_v1": ConversationTemplate(
        name="vicuna_v1",
        system=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."
        ),
        roles=("USER", "ASSISTANT"),
        sep=" ",
        sep2="</s>",
        style="two",
    ),
    "plain": ConversationTemplate(name="plain", system="", roles=("", ""), sep="", sep2="\n", style="plain"),
}


def _vicuna_v1_jinja(template: ConversationTemplate) -> str:
    """`template` (style "two") as a Jinja chat template: messages `{"role": "system" | "user" | "assistant",
    "content": str | [{"type": "text", "text": str} | {"type": "image"} | {"type": "video"}, ...]}`; an image /
    video part is written `"<image>\\n"` / `"<video>\\n"` (LLaMA-VID's `"<image>\\nquestion"`), text parts as they are."""
    user, assistant = template.roles
    sep, sep2 = repr(template.sep), repr(template.sep2)
    return (
        "{%- macro text(content) -%}{%- if content is string -%}{{ content }}{%- else -%}"
        "{%- for part in content -%}"
        "{%- if part['type'] in ('image', 'video') -%}{{ '<' ~ part['type'] ~ '>\\n' }}"
        "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
        "{%- else -%}{{ raise_exception('unknown content type ' ~ part['type']) }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}{%- endmacro -%}"
        "{%- set ns = namespace(system=" + repr(template.system) + ", turn=0) -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}{%- set ns.system = text(messages[0]['content']) -%}"
        "{%- endif -%}"
        "{{- ns.system ~ " + sep + " -}}"
        "{%- for message in messages if message['role'] != 'system' -%}"
        "{%- if message['role'] != ('user', 'assistant')[ns.turn % 2] -%}"
        "{{ raise_exception('roles must alternate user/assistant starting with user') }}{%- endif -%}"
        "{%- set body = text(message['content']) -%}"
        "{%- if not body -%}{{ (" + repr(user) + ", " + repr(assistant) + ")[ns.turn % 2] ~ ':' }}"
        "{%- elif message['role'] == 'user' -%}{{ " + repr(user + ": ") + " ~ body ~ " + sep + " }}"
        "{%- else -%}{{ " + repr(assistant + ": ") + " ~ body ~ " + sep2 + " }}"
        "{%- endif -%}{%- set ns.turn = ns.turn + 1 -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ " + repr(assistant + ":") + " }}{%- endif -%}"
    )


VICUNA_V1_CHAT_TEMPLATE = _vicuna_v1_jinja(TEMPLATES["vicuna_v1"])
"""What `TEMPLATES["vicuna_v1"].render` writes, as a Jinja chat template (saved as `chat_template.jinja`)."""


def get_template(name: str) -> ConversationTemplate:
    """The template called `name`; ValueError listing the valid names otherwise."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; valid templates: {sorted(TEMPLATES)}")
    return TEMPLATES[name]
