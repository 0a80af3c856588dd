"""Caps where evaluator text flows on: huge metrics, feedback and results, with real evaluators and a real tree."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger

import tasks.generate as generate_module
from evolveflow.caps import MORE_METRICS_KEY, cap_feedback, cap_metrics, cut_text, marker, metrics_text
from evolveflow.edits import code_hash
from evolveflow.evaluation import EvaluatorSpec, run_evaluation
from evolveflow.experiment import load_experiment
from evolveflow.prompts import build_proposal_messages, load_templates, render_feedback
from evolveflow.records import Candidate, Node, Outcome, Status
from evolveflow.runtime import close_runtime, open_runtime
from evolveflow.scaffold import scaffold_experiment
from storage.report import build_report
from tasks.evaluate import score_candidate
from tasks.generate import propose, register
from tasks.persist import final_node, save
from tasks.sample import choose

BLOB = 5_000_000
HUGE_METRIC_EVALUATOR = f'''
import sys
def evaluate(program_path):
    sys.stderr.write("e" * 100000 + "last words\\n")
    return {{"score": 1.25, "metrics": {{"blob": "x" * {BLOB}, "nested": {{"rows": list(range(200000))}}, "n": 3}}}}
'''


def make_executable(folder: Path, text: str, name: str = "eval.sh") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    path.chmod(0o755)
    return path


# ---- the pure helpers ---------------------------------------------------------------------------

def test_cut_text_keeps_head_or_tail_within_the_limit_with_the_marker():
    text = "a" * 50 + "b" * 50
    head, tail = cut_text(text, 60), cut_text(text, 60, keep="tail")
    assert len(head) <= 60 and head.startswith("aaa") and head.endswith(marker(100))
    assert len(tail) <= 60 and tail.startswith(marker(100)) and tail.endswith("bbb")
    assert cut_text("short", 60) == "short" and marker(5_002_317) == "…[cut: 5,002,317 chars]"


def test_cap_metrics_cuts_long_values_only_and_deterministically():
    metrics = {"score_like": 0.5, "flag": True, "blob": "x" * 30_000, "rows": list(range(10_000)), "s": "ok"}
    capped = cap_metrics(metrics, 1000)
    assert capped == cap_metrics(metrics, 1000)  # the same cut every time
    assert (capped["score_like"], capped["flag"], capped["s"]) == (0.5, True, "ok")
    assert capped["blob"].endswith(marker(30_000)) and len(capped["blob"]) <= 1000
    assert isinstance(capped["rows"], str) and "…[cut: " in capped["rows"] and len(capped["rows"]) <= 1000
    assert cap_metrics({"a": 1}, 1000) == {"a": 1}


def test_cap_metrics_bounds_very_many_keys():
    capped = cap_metrics({f"k{i}": "v" * 50 for i in range(10_000)}, 1000)
    assert len(json.dumps(capped)) < 5 * 1000 + 200
    assert capped[MORE_METRICS_KEY].startswith(f"{10_000 - len(capped) + 1:,} more metrics")


def test_feedback_shares_its_cap_and_keeps_each_items_tail():
    feedback = {"error": "E" * 100 + "end of error", "stderr": "S" * 20_000 + "last line", "note": "short"}
    capped = cap_feedback(feedback, 4000)
    assert sum(len(v) for v in capped.values()) <= 4000
    assert capped["note"] == "short" and capped["error"] == feedback["error"]
    assert capped["stderr"].endswith("last line") and capped["stderr"].startswith(marker(20_009))
    shown = render_feedback({**feedback, "artifact:log": "L" * 1_000_000}, 4000)
    assert len(shown) <= 4000 and "--- artifact:log ---" in shown and "--- stderr ---" in shown


def test_prompt_metrics_and_feedback_respect_their_caps():
    parent = Node(id=1, parent_id=None, round=0, code="x = 1\n", code_hash="h", score=1.0,
                  metrics={"blob": "x" * BLOB, "n": 3}, feedback={"stderr": "s" * 1_000_000})
    other = parent.model_copy(update={"id": 2, "feedback": {}})
    user = build_proposal_messages(load_templates(), "Maximise.", parent, [other], [], [], "Reply.",
                                   max_metrics_chars=500, max_feedback_chars=800)[1]["content"]
    assert len(user) < 3000 and user.count(marker(BLOB)) == 2
    metrics_lines = [line for line in user.splitlines() if line.startswith("Metrics: ")]
    assert len(metrics_lines) == 2 and all(len(line) <= len("Metrics: ") + 500 for line in metrics_lines)
    assert metrics_text({"n": 3}, 500) == '{"n": 3}'


# ---- reading a large result whole, refusing one over the limit ----------------------------------

def test_a_20_mb_json_line_from_a_native_script_is_read_whole(tmp_path):
    script = make_executable(tmp_path, """\
        #!/usr/bin/env python3
        import json
        print("starting")
        print(json.dumps({"score": 2.5, "metrics": {"trace": "t" * 20_000_000, "n": 7}}))
        """, "eval.py.sh")
    result = run_evaluation("", EvaluatorSpec(path=script, contract="native", sandbox="process", timeout_s=60))
    assert result.outcome == Outcome.OK, result.error
    assert result.score == 2.5 and result.metrics["n"] == 7
    assert result.metrics["trace"].endswith(marker(20_000_000)) and len(result.metrics["trace"]) <= 20_000
    assert len(result.stdout_tail) <= 2000  # what is stored of stdout stays small


def test_a_stdout_result_over_max_result_bytes_is_a_candidate_error_naming_the_key(tmp_path):
    script = make_executable(tmp_path, """\
        #!/usr/bin/env python3
        import json
        print(json.dumps({"score": 2.5, "metrics": {"trace": "t" * 2_000_000}}))
        """, "eval.py.sh")
    result = run_evaluation("", EvaluatorSpec(path=script, contract="native", sandbox="process", max_result_bytes=1_000_000))
    assert result.outcome == Outcome.CANDIDATE_ERROR and result.score is None
    assert "more than evaluation.max_result_bytes (1,000,000 bytes)" in result.error
    assert "2,000,0" in result.error  # the size it printed


def test_a_results_json_over_max_result_bytes_names_the_key(tmp_path):
    script = make_executable(tmp_path, """\
        #!/bin/sh
        python3 -c 'import json; json.dump({"score": 1, "pad": "p" * 300000}, open("results.json", "w"))'
        """)
    result = run_evaluation("", EvaluatorSpec(path=script, contract="native", sandbox="process", max_result_bytes=100_000))
    assert result.outcome == Outcome.CANDIDATE_ERROR
    assert "results.json is 300,0" in result.error and "evaluation.max_result_bytes (100,000 bytes)" in result.error


def test_a_harness_result_over_max_result_bytes_names_the_key(tmp_path):
    evaluator = tmp_path / "evaluator.py"
    evaluator.write_text('def evaluate(program_path):\n    return {"score": 1.0, "metrics": {"pad": "p" * 300000}}\n')
    ok = run_evaluation("", EvaluatorSpec(path=evaluator, sandbox="process"))
    assert ok.outcome == Outcome.OK and ok.score == 1.0
    refused = run_evaluation("", EvaluatorSpec(path=evaluator, sandbox="process", max_result_bytes=100_000))
    assert refused.outcome == Outcome.CANDIDATE_ERROR
    assert "the evaluator's result is 300,0" in refused.error and "evaluation.max_result_bytes" in refused.error


def test_shinka_public_and_private_metrics_are_stored_cut(tmp_path):
    evaluator = tmp_path / "evaluate.py"
    evaluator.write_text(textwrap.dedent("""\
        import argparse, json, os
        parser = argparse.ArgumentParser()
        parser.add_argument("--program_path"); parser.add_argument("--results_dir")
        args = parser.parse_args()
        with open(os.path.join(args.results_dir, "metrics.json"), "w") as f:
            json.dump({"combined_score": 2.0, "public": {"big": "y" * 100000, "n": 1},
                       "private": {"secret": "z" * 100000}}, f)
        with open(os.path.join(args.results_dir, "correct.json"), "w") as f:
            json.dump({"correct": True}, f)
        """))
    result = run_evaluation("", EvaluatorSpec(path=evaluator, contract="shinka", sandbox="process",
                                              metrics_max_chars=1000))
    assert result.outcome == Outcome.OK and result.score == 2.0
    assert result.metrics["n"] == 1 and result.metrics["big"].endswith(marker(100_000))
    assert result.private_metrics["secret"].endswith(marker(100_000)) and len(result.private_metrics["secret"]) <= 1000


def test_a_huge_error_text_is_stored_cut_keeping_its_end(tmp_path):
    evaluator = tmp_path / "evaluator.py"
    evaluator.write_text('def evaluate(program_path):\n    raise ValueError("w" * 100000 + " the end")\n')
    result = run_evaluation("", EvaluatorSpec(path=evaluator, contract="openevolve", sandbox="process",
                                              metrics_max_chars=1000))
    assert result.outcome == Outcome.CANDIDATE_ERROR
    assert len(result.error) <= 1000 and result.error.startswith("…[cut: ") and result.error.endswith("the end")


# ---- a 5 MB metric through a round: tree, report and the next prompt ------------------------------

@pytest.fixture
def huge_metric_rt(tmp_path):
    exp = tmp_path / "experiments" / "demo"
    scaffold_experiment("demo", tmp_path / "experiments")
    (exp / "config.yaml").write_text(
        "evaluation: {evaluator: evaluator.py, timeout_s: 60}\ncognition: {embeddings: false}\n"
        "api: {retry_backoff_s: 0.01, num_retries: 0}\n"
        "database: {sampling: {algorithm: greedy}}\nprompts: {max_metrics_chars: 300, max_feedback_chars: 500}\n")
    (exp / "evaluator.py").write_text(HUGE_METRIC_EVALUATOR)
    rt = open_runtime(load_experiment("demo", tmp_path))
    yield rt
    close_runtime(rt)


def test_a_5_mb_metric_is_cut_in_the_tree_the_report_and_the_next_prompt(huge_metric_rt, monkeypatch):
    rt = huge_metric_rt
    code = rt.experiment.initial_code
    root = Node(id=rt.next_node_id(), parent_id=None, round=0, code=code, code_hash=code_hash(code),
                motivation="initial program", status=Status.OK, score=0.0)
    rt.tree.finish_node(root)
    child_code = code.replace("C1 = 0.8", "C1 = 0.7")
    candidate = register(rt, Candidate(node=Node(
        id=rt.next_node_id(), parent_id=root.id, round=1, code=child_code, code_hash=code_hash(child_code),
        motivation="try", status=Status.PENDING)))
    with disable_run_logger():
        scored = score_candidate(rt, candidate)
    node = save(rt, final_node(candidate, scored, None, {}), scored, [])
    assert node.score == 1.25  # the score is never cut

    stored = rt.tree.node(node.id)
    assert stored.metrics["n"] == 3 and stored.metrics["blob"].endswith(marker(BLOB))
    assert len(json.dumps(stored.metrics)) < 2 * 20_000 + 200
    assert stored.metrics["nested"].endswith("chars]")  # a long nested value is cut too
    attempts = rt.tree.attempts(node.id)  # a new best is confirmed by re-runs
    assert attempts and all(len(json.dumps(a["metrics"])) < 2 * 20_000 + 200 for a in attempts)

    report = build_report(rt.tree, "demo")
    assert report["best"]["id"] == node.id and report["best"]["metrics"]["blob"].endswith(marker(BLOB))
    assert len(json.dumps(report)) < 100_000

    prompts: list[str] = []
    real_call = generate_module.call_llm

    def recording_call(api, messages, *args, **kwargs):
        prompts.append(messages[-1]["content"])
        return real_call(api, messages, *args, **kwargs)
    monkeypatch.setattr(generate_module, "call_llm", recording_call)
    with disable_run_logger():
        sampled = choose(rt, round_no=2)
        propose(rt, sampled, [])
    assert sampled.parent.id == node.id  # greedy: the best is the parent, shown with its feedback
    metrics_line = next(line for line in prompts[0].splitlines() if line.startswith("Metrics: "))
    assert len(metrics_line) <= len("Metrics: ") + 300 and "…[cut: " in metrics_line
    feedback = prompts[0][prompts[0].index("Evaluator feedback on this program:"):].split("\n# ")[0].rstrip()
    assert len(feedback) <= 500 and "last words" in feedback and "…[cut: " in feedback
    assert len(prompts[0]) < 20_000


def test_report_cuts_metrics_of_a_tree_written_before_the_caps(huge_metric_rt):
    rt = huge_metric_rt
    code = rt.experiment.initial_code
    old = Node(id=rt.next_node_id(), parent_id=None, round=0, code=code, code_hash=code_hash(code),
               status=Status.OK, score=1.0, metrics={"blob": "x" * BLOB})
    rt.tree.finish_node(old)  # as an older evolveflow stored it: whole
    report = build_report(rt.tree, "demo", metrics_max_chars=1000)
    assert report["best"]["metrics"]["blob"].endswith(marker(BLOB))
    assert len(report["best"]["metrics"]["blob"]) <= 1000
