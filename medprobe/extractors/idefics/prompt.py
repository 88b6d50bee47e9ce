"""IDEFICS prompts: from ``cfg.prompt.text`` to the exact text the model reads.

``cfg.prompt.text`` is a template with one ``{image}`` placeholder, e.g.
``"User:{image}Question: What's on this image? Answer:<end_of_utterance>\\nAssistant:"``, or a
bare question (the ``conf/prompt`` presets), which is wrapped by the prompt format
(``model.prompt_format``, :data:`PROMPT_FORMATS`): ``chat`` (default) by :func:`chat_template`
in exactly that instruct chat format, image first; ``plain`` by :func:`plain_template` as
``{image}`` + the question, the authors' ``processor([image, text])`` (``activation.py``). The template is split into the interleaved list
``["User:", <image>, "Question: ...\\nAssistant:"]`` that ``IdeficsProcessor`` takes
(:func:`interleave`) and rendered with the processor's own rules (:func:`render_prompt`:
``<s>`` first, each text piece stripped of spaces, the image as
``<fake_token_around_image><image><fake_token_around_image>``, no end-of-utterance token added:
the template writes it, as the model cards do with ``add_end_of_utterance_token=False``).
"""

from __future__ import annotations

from typing import Any

from medprobe.errors import ExtractorError

IMAGE_SLOT = "{image}"
IMAGE_TOKEN = "<image>"
FAKE_TOKEN = "<fake_token_around_image>"
END_OF_UTTERANCE = "<end_of_utterance>"
#: ``model.prompt_format`` values: how a bare question is wrapped.
PROMPT_FORMATS = ("chat", "plain")


def chat_template(question: str) -> str:
    """A bare question -> the instruct chat template with the image first (the paper's order).

    ``"Q"`` -> ``"User:{image}Q<end_of_utterance>\\nAssistant:"``: the format of the
    IDEFICS instruct model cards, with the image before the question as in the paper's code
    (``[image, question]``).
    """
    return f"User:{IMAGE_SLOT}{question.strip()}{END_OF_UTTERANCE}\nAssistant:"


def plain_template(question: str) -> str:
    """A bare question -> ``"{image}" + question``: the authors' extraction input.

    ``activation.py`` (peterhan91/Multimodal-Probes) calls ``processor([image, text])`` with
    ``text = PROMPT[key]``: ``<s>``, the image, the question; no ``User:``, no
    ``<end_of_utterance>``, no ``Assistant:``. The last token is the ``:`` of ``Answer:``.
    """
    return f"{IMAGE_SLOT}{question.strip()}"


def split_template(template: str, prompt_format: str = "chat") -> tuple[str, str]:
    """Split a prompt at its one ``{image}`` placeholder -> ``(before, after)``.

    A prompt without ``{image}`` is a bare question (e.g. the presets ``pathology``,
    ``dermatology``, ...) and is first wrapped by :func:`chat_template` (``prompt_format=
    "chat"``) or :func:`plain_template` (``"plain"``). A template with ``{image}`` is used as
    written under either format.

    Raises:
        ExtractorError: the prompt is empty (``prompt=none``), has several ``{image}``
            placeholders, or writes a literal ``<image>`` / ``<fake_token_around_image>``
            (the processor would read it as a second image slot that no image fills;
            transformers 5.24 trap); an unknown ``prompt_format``.
    """
    if prompt_format not in PROMPT_FORMATS:
        raise ExtractorError(
            f"idefics: model.prompt_format must be one of {', '.join(PROMPT_FORMATS)}, "
            f"got {prompt_format!r}"
        )
    if not isinstance(template, str) or not template.strip():
        raise ExtractorError(
            "idefics: the prompt is empty; choose prompt=general (or pathology, dermatology, "
            "ophthalmology, radiology) or set prompt.text to a question or to a template "
            "with one {image}"
        )
    for literal in (IMAGE_TOKEN, FAKE_TOKEN):
        if literal in template:
            raise ExtractorError(
                f"idefics: the prompt contains the literal {literal}; write {IMAGE_SLOT} where "
                f"the image goes (a literal {IMAGE_TOKEN} becomes an extra, empty image slot): "
                f"{template!r}"
            )
    n = template.count(IMAGE_SLOT)
    if n == 0:
        template = plain_template(template) if prompt_format == "plain" else chat_template(template)
    elif n > 1:
        raise ExtractorError(
            f"idefics: one image per sample: the prompt has {n} {IMAGE_SLOT} placeholders: "
            f"{template!r}"
        )
    before, after = template.split(IMAGE_SLOT)
    return before, after


def interleave(template: str, image: Any, prompt_format: str = "chat") -> list[Any]:
    """The interleaved ``[text, image, text]`` list ``IdeficsProcessor`` takes for one sample.

    Empty text pieces are dropped. ``image`` is passed through (a ``PIL.Image``; never a path
    string, which the processor would read as text).

    Raises:
        ExtractorError: see :func:`split_template`.
    """
    before, after = split_template(template, prompt_format)
    return [p for p in (before, image, after) if not (isinstance(p, str) and not p)]


def render_prompt(template: str, bos_token: str = "<s>", prompt_format: str = "chat") -> str:
    """The exact text the model reads for ``template``, by ``IdeficsProcessor``'s rules.

    ``bos_token`` + each text piece stripped of spaces, the image as
    ``<fake_token_around_image><image><fake_token_around_image>``; no end-of-utterance token is
    inserted (``add_end_of_utterance_token=False``: the template writes it). Tests check that
    tokenising this string gives the processor's ``input_ids``.

    Raises:
        ExtractorError: see :func:`split_template`.
    """
    before, after = split_template(template, prompt_format)
    return f"{bos_token}{before.strip(' ')}{FAKE_TOKEN}{IMAGE_TOKEN}{FAKE_TOKEN}{after.strip(' ')}"
