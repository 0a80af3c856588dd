"""Prompt building: the exact proposal prompt (golden), overrides, and what the offline model reads back."""
import os
from pathlib import Path

import pytest

from evolveflow.edits import REPLY_FORMAT
from evolveflow.prompts import (PromptTemplateError, Templates, build_analysis_messages,
                                build_proposal_messages, facts_in_prompt, load_templates,
                                programs_in_prompt)
from evolveflow.records import Node, Retrieved, Status

GOLDEN = Path(__file__).parent / "golden" / "prompts"

PARENT_CODE = "# header\n# EVOLVE-BLOCK-START\nA = 0.5\n# EVOLVE-BLOCK-END\n\n# a top-level comment\nprint(A)\n"


def example_messages(templates=None):
    parent = Node(id=7, parent_id=3, round=4, code=PARENT_CODE, code_hash="h", score=1.25,
                  metrics={"width": 2}, motivation="Raise A.", analysis="A up helped.", status=Status.OK)
    other = Node(id=5, parent_id=3, round=3, code="# EVOLVE-BLOCK-START\nA = 0.4\n# EVOLVE-BLOCK-END\n",
                 code_hash="h2", score=1.0, status=Status.OK)
    failed = Node(id=9, parent_id=7, round=5, code=PARENT_CODE, code_hash="", status=Status.CANDIDATE_ERROR,
                  error="Traceback...\nValueError: circle 3 overlaps circle 4 by 0.01", motivation="Grow circle 3.")
    retrieved = [Retrieved(kind="knowledge", title="Hexagons", content="Hexagonal packings are dense."),
                 Retrieved(kind="lesson", title="A", content="Raising A to 0.5 helped.", node_id=7)]
    return build_proposal_messages(templates or load_templates(), "Maximise A.\n", parent, [other], [failed],
                                   retrieved, REPLY_FORMAT)


def test_proposal_prompt_matches_golden():
    messages = example_messages()
    text = f"[system]\n{messages[0]['content']}\n[user]\n{messages[1]['content']}"
    golden = GOLDEN / "proposal.txt"
    if os.environ.get("EVOLVEFLOW_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), "prompt changed: review, then EVOLVEFLOW_UPDATE_GOLDEN=1 to accept"


def test_offline_model_reads_parent_and_inspirations_back():
    parent, inspirations = programs_in_prompt(example_messages()[1]["content"])
    assert parent == PARENT_CODE
    assert inspirations == ["# EVOLVE-BLOCK-START\nA = 0.4\n# EVOLVE-BLOCK-END\n"]


def test_experiment_can_override_one_template(tmp_path):
    (tmp_path / "propose.md").write_text("CUSTOM $problem\n$parent\n$reply_format\n")
    templates = load_templates(tmp_path)
    assert templates.propose.startswith("CUSTOM")
    assert templates.system == load_templates().system
    user = example_messages(templates)[1]["content"]
    assert user.startswith("CUSTOM Maximise A.")


def test_unknown_placeholder_is_a_clear_error(tmp_path):
    templates = Templates(system="s", propose="$problem $nonsense", analyze="a")
    with pytest.raises(PromptTemplateError, match=r"propose.md uses \$nonsense, which is not one of"):
        example_messages(templates)


def test_analysis_facts_round_trip():
    facts = {"node": "9", "status": "ok", "delta": "+0.1"}
    (message,) = build_analysis_messages(load_templates(), facts, "idea", "diff")
    assert facts_in_prompt(message["content"]) == facts


def test_the_parents_feedback_is_shown_after_its_code_and_private_metrics_never():
    parent = Node(id=7, parent_id=3, round=4, code=PARENT_CODE, code_hash="h", score=1.25, metrics={"width": 2},
                  status=Status.OK, private_metrics={"held_out_score": 0.123456},
                  feedback={"stderr": "RuntimeWarning: overflow", "text_feedback": "Tighten the corners.",
                            "artifact:failure_stage": "stage2"})
    other = parent.model_copy(update={"id": 8, "code_hash": "h8", "feedback": {"text_feedback": "OTHER NODE"}})
    user = build_proposal_messages(load_templates(), "Maximise A.\n", parent, [other], [], [], REPLY_FORMAT)[1]["content"]
    section = user[user.index("# Current program"):user.index("# Other programs")]
    code_end = section.index("```", section.index("```python") + 3)
    feedback = section[code_end:]
    assert feedback.index("--- artifact:failure_stage ---\nstage2") < feedback.index("--- text_feedback ---\nTighten the corners.") \
        < feedback.index("--- stderr ---\nRuntimeWarning: overflow")  # stderr last: the least specific
    assert "OTHER NODE" not in user  # only the parent's feedback
    assert "held_out_score" not in user and "0.123456" not in user
    assert programs_in_prompt(user)[0] == PARENT_CODE  # the offline model still reads the right code
