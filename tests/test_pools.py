"""Proposals and evaluations as two pools with their own limits, and a cap on LLM calls at once."""
from __future__ import annotations

import os
import threading

import pytest

from evolveflow.records import Status
from flows.search import evolve_search
from tests.support.openai_server import FakeOpenAIServer, offline_responder
from tests.test_resilience_e2e import experiment, tree_of

pytestmark = pytest.mark.usefixtures("prefect_server")

# Each evaluation appends "start end" (monotonic seconds) for its candidate to SPANS.
TIMED = '''
import time

def evaluate(program_path):
    start = time.monotonic()
    time.sleep(0.4)
    with open(os.path.join(os.path.dirname(__file__), "SPANS"), "a") as spans:
        spans.write(f"{start} {time.monotonic()}\\n")
    return {"score": -mse(load(program_path))}
'''


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_evaluation_concurrency_caps_evaluations_while_proposals_go_on(tmp_path):
    exp = experiment(tmp_path, TIMED, "evaluation: {evaluator: evaluator.py, timeout_s: 20, sandbox: process, "
                                      "concurrency: 1}\npipeline: {parallel: {num_workers: 3}}\n")
    summary = evolve_search(experiment="demo", rounds=6, root=str(tmp_path))
    assert summary["rounds_done"] == 6
    spans = [tuple(map(float, line.split())) for line in (exp / "SPANS").read_text().splitlines()]
    assert len(spans) >= 4 and _most_at_once(spans) == 1, spans  # never two evaluations at once
    with tree_of(tmp_path) as tree:
        assert tree.ids_with_status(Status.PENDING) == []


def test_api_max_concurrency_caps_llm_calls_at_once(tmp_path):
    lock = threading.Lock()
    open_calls, most = [0], [0]
    answer = offline_responder(delay_s=0.3)

    def respond(request: dict) -> str:
        with lock:
            open_calls[0] += 1
            most[0] = max(most[0], open_calls[0])
        try:
            return answer(request)
        finally:
            with lock:
                open_calls[0] -= 1

    with FakeOpenAIServer(responder=respond) as srv:
        experiment(tmp_path, 'def evaluate(program_path):\n    return {"score": -mse(load(program_path))}\n',
                   f"api: {{model: openai/stub, analyzer_model: openai/stub, api_base: '{srv.base_url}', "
                   "num_retries: 0, retry_backoff_s: 0.01, max_concurrency: 1}\n"
                   "pipeline: {parallel: {num_workers: 3}}\n")
        os.environ["OPENAI_API_KEY"] = "x"
        try:
            evolve_search(experiment="demo", rounds=5, root=str(tmp_path))
        finally:
            del os.environ["OPENAI_API_KEY"]
    assert len(srv.requests) >= 8 and most[0] == 1, most
