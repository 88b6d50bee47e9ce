"""IDEFICS prompts: the presets, the chat template and the text the model reads.

(That the rendered text tokenises exactly like ``IdeficsProcessor``'s output is tested on a tiny
model in test_idefics_extractor.py.)
"""

from __future__ import annotations

import pytest
from helpers import Compose

from medprobe.errors import ExtractorError
from medprobe.extractors.idefics.prompt import (
    chat_template,
    interleave,
    plain_template,
    render_prompt,
    split_template,
)

FAKE = "<fake_token_around_image>"
#: conf/prompt/*.yaml texts (the paper's PROMPT table, verbatim; radiology is ours).
PRESETS = {
    "general": "Question: What's on this image? Answer:",
    "pathology": "Question: What can you seen on this histological picture? Answer:",
    "dermatology": "Question: What can you seen on this skin image? Answer:",
    "ophthalmology": "Question: What can you seen on this eye fundus image? Answer:",
    "radiology": "Question: What can you seen on this radiological image? Answer:",
    "chest_xray": "Question: What can you seen on this chest radiological image? Answer:",
    "knee_xray": "Question: What can you seen on this knee radiological image? Answer:",
}
#: What IDEFICS reads for prompt=general (pinned).
GENERAL_RENDERED = (
    "<s>User:<fake_token_around_image><image><fake_token_around_image>"
    "Question: What's on this image? Answer:<end_of_utterance>\nAssistant:"
)
GENERAL = PRESETS["general"]
PATHOLOGY = PRESETS["pathology"]


def test_prompt_presets_are_pinned_and_render_as_the_paper_question_in_chat_format(
    compose: Compose,
) -> None:
    for name, text in PRESETS.items():
        cfg = compose("model=idefics80b", f"prompt={name}")
        assert (cfg.prompt.name, cfg.prompt.text) == (name, text)
        assert render_prompt(cfg.prompt.text) == (
            f"<s>User:{FAKE}<image>{FAKE}{text}<end_of_utterance>\nAssistant:"
        )
    assert render_prompt(GENERAL) == GENERAL_RENDERED
    assert chat_template(GENERAL) == "User:{image}" + GENERAL + "<end_of_utterance>\nAssistant:"
    # a full template is used as is (spaces around the image stripped, as the processor does)
    assert render_prompt("{image} Question: What's on this image? Answer:") == (
        f"<s>{FAKE}<image>{FAKE}Question: What's on this image? Answer:"
    )
    assert interleave("User:{image}Q?", "IMG") == ["User:", "IMG", "Q?"]
    assert interleave("{image}Q?", "IMG") == ["IMG", "Q?"]


#: What IDEFICS reads for prompt=general under model.prompt_format=plain (the authors'
#: activation.py: processor([image, "Question: What's on this image? Answer:"]); pinned).
GENERAL_PLAIN = (
    "<s><fake_token_around_image><image><fake_token_around_image>"
    "Question: What's on this image? Answer:"
)


def test_plain_format_is_the_authors_processor_input_for_every_preset(compose: Compose) -> None:
    """fidelity=paper sets prompt_format=plain for both IDEFICS models: <s>, the image, the
    question; no User:, no <end_of_utterance>, no Assistant:."""
    assert render_prompt(GENERAL, prompt_format="plain") == GENERAL_PLAIN
    assert plain_template(GENERAL) == "{image}" + GENERAL
    for model in ("idefics80b", "idefics9b"):
        for name, text in PRESETS.items():
            cfg = compose("fidelity=paper", f"model={model}", f"prompt={name}")
            assert cfg.model.prompt_format == "plain"
            assert render_prompt(cfg.prompt.text, prompt_format=cfg.model.prompt_format) == (
                f"<s>{FAKE}<image>{FAKE}{text}"
            )
    # medprobe's default stays the chat turn
    assert compose("model=idefics80b").model.prompt_format == "chat"
    # a full template is used as written under either format
    tpl = "User:{image}Q?<end_of_utterance>\nAssistant:"
    assert render_prompt(tpl, prompt_format="plain") == render_prompt(tpl)
    assert interleave(GENERAL, "IMG", "plain") == ["IMG", GENERAL]
    with pytest.raises(ExtractorError, match="prompt_format must be one of chat, plain"):
        render_prompt(GENERAL, prompt_format="raw")


def test_docs_exact_example_is_the_rendered_text() -> None:
    """docs/idefics.md's examples of what the model reads are the rendered strings verbatim."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "idefics.md").read_text()
    assert GENERAL_RENDERED in doc and GENERAL_PLAIN in doc
    assert "{image}Question: What's on this image? Answer:" in doc
    assert "What is on this image" not in doc


def test_malformed_templates_are_refused_with_the_fix() -> None:
    assert split_template("User:{image}Q?") == ("User:", "Q?")
    assert split_template("Q?") == ("User:", "Q?<end_of_utterance>\nAssistant:")
    for bad, msg in (
        ("", "choose prompt=general"),
        ("   ", "choose prompt=general"),
        ("{image}{image}What?", "2 {image} placeholders"),
        ("User:<image>What?", "literal <image>"),
        (f"User:{FAKE}What?", f"literal {FAKE}"),
    ):
        with pytest.raises(ExtractorError, match=msg):
            render_prompt(bad)
