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
