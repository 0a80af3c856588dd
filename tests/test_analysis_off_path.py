"""The analysis of round k is off the critical path: with one worker, round k+1's proposal reaches
the LLM while round k's analyst call is still open, and every lesson is still written."""
from __future__ import annotations

import os
import threading

import pytest

from flows.search import evolve_search
from tests.support.openai_server import FakeOpenAIServer, is_analysis, offline_responder, user_text
from tests.test_resilience_e2e import experiment, tree_of

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_the_next_proposal_does_not_wait_for_the_analysis(tmp_path):
    analysing = threading.Event()
    overlapped: list[bool] = []

    answer = offline_responder()

    def respond(request: dict) -> str:
        if is_analysis(user_text(request)):  # the analyst: hold the reply until a proposal arrives meanwhile
            analysing.set()
            seen = proposal_during_analysis.wait(timeout=4)  # the last one waits it out
            overlapped.append(seen)
            proposal_during_analysis.clear()
            return answer(request)
        if analysing.is_set():
            analysing.clear()
            proposal_during_analysis.set()
        return answer(request)

    proposal_during_analysis = threading.Event()
    with FakeOpenAIServer(responder=respond) as srv:
        experiment(tmp_path, 'def evaluate(program_path):\n    return {"score": -mse(load(program_path))}\n',
                   f"api: {{model: openai/stub, analyzer_model: openai/stub, api_base: '{srv.base_url}', "
                   "num_retries: 0, retry_backoff_s: 0.01, timeout_s: 60}\n"
                   "pipeline: {parallel: {num_workers: 1}}\n")
        os.environ["OPENAI_API_KEY"] = "x"
        try:
            summary = evolve_search(experiment="demo", rounds=3, root=str(tmp_path))
        finally:
            del os.environ["OPENAI_API_KEY"]
    assert summary["rounds_done"] == 3
    assert overlapped and any(overlapped), "each analysis held up the next proposal"
    with tree_of(tmp_path) as tree:
        evaluated = [n for n in tree.nodes(sorted(tree.node_ids())) if n.round > 0 and n.status.value == "ok"]
        assert evaluated and all(n.analysis for n in evaluated)  # the lessons are all written
        assert all(any(c["purpose"] == "analyze" for c in tree.llm_calls(n.id)) for n in evaluated)
