"""The morning report: written by a real search and by `evolveflow report`, checked in headless chromium."""
from __future__ import annotations

import random
import re
import shutil
import subprocess
import time
from html import unescape
from pathlib import Path

import pytest

from evolveflow.cli import main
from evolveflow.edits import code_hash
from evolveflow.morning_report import write_html_report, write_report_at_end
from evolveflow.records import EvalResult, LLMReply, Node, Outcome, Status
from evolveflow.scaffold import scaffold_experiment
from evolveflow.search_lock import SearchLock
from storage.tree import TreeStore

CHROMIUM = shutil.which("chromium")
SECTIONS = ("progress", "lineage", "tree", "leaderboard", "lessons", "failures", "usage", "noise", "runs")
HOSTILE = "</script><script>alert('motivation')</script>"


@pytest.fixture(scope="module")
def searched(tmp_path_factory, prefect_server) -> Path:
    """A real offline search of the scaffolded demo, 5 rounds; returns the root it ran in."""
    from flows.search import evolve_search

    root = tmp_path_factory.mktemp("report-search")
    exp = scaffold_experiment("demo", root / "experiments")
    (exp / "config.yaml").write_text((exp / "config.yaml").read_text() + "\ncognition:\n  embeddings: false\n")
    summary = evolve_search(experiment="demo", rounds=5, root=str(root))
    assert summary["rounds_done"] == 5
    assert (root / "runs" / "demo" / "report.html").is_file()  # written by the search itself
    return root


def synthetic_tree(path: Path, n: int = 1000, seed: int = 0) -> None:
    """Writes an n-node tree with every outcome, diffs, lessons, repeated attempts and LLM calls.

    Each node is one finish_node (an upsert), as a search's persist step writes it.
    """
    rng = random.Random(seed)
    statuses = [Status.OK] * 6 + [Status.CANDIDATE_ERROR, Status.REJECTED, Status.INFRA_FAILED, Status.ABANDONED]
    scores: dict[int, float] = {}
    with TreeStore(path) as tree:
        for i in range(1, n + 1):
            parent = None if i == 1 else rng.choice(sorted(scores, key=scores.get)[-20:] + [rng.randrange(1, i)])
            status = Status.OK if i == 1 else rng.choice(statuses)
            score = (scores.get(parent, 1.0) + rng.gauss(0.002, 0.01)) if status == Status.OK else None
            code = f"x = {i}\n"
            node = Node(
                id=i, parent_id=parent, round=max(0, i - 1), code=code, code_hash=code_hash(code),
                motivation=HOSTILE if i == 7 else f"move constant {i % 13} by {rng.random():.3f}",
                edit=f"--- parent\n+++ child\n@@ -1 +1 @@\n-x = {parent}\n+x = {i}\n" if parent else "",
                score=score, status=status, analysis=f"lesson of node {i}: <b>not bold</b>",
            )
            attempts = []
            if status == Status.OK:
                scores[i] = score
                repeats = 3 if i % 25 == 0 else 1
                attempts = [EvalResult(outcome=Outcome.OK, score=score + rng.gauss(0, 0.003) * (k > 0))
                            for k in range(repeats)]
            elif status == Status.CANDIDATE_ERROR:
                attempts = [EvalResult(outcome=Outcome.CANDIDATE_ERROR, error=f"ValueError: bad radius {i % 3}")]
            reply = LLMReply(text="", model="some/model", prompt_tokens=900 + i % 50, completion_tokens=60,
                             cost_usd=None if i % 100 == 0 else 0.0004)
            tree.finish_node(
                node.model_copy(update={
                    "error": None if status == Status.OK else f"{status.value} because {i % 4}",
                    "score_spread": 0.004 if i % 25 == 0 and status == Status.OK else None}),
                attempts, [("propose", reply, None), ("analyze", reply, None)] if i > 1 else [])
        tree.start_run("r1", n, 1)
        tree.end_run("r1", n - 1, "rounds")


@pytest.fixture(scope="module")
def thousand(tmp_path_factory) -> Path:
    """The synthetic 1,000-node tree's DuckDB file (built once: ~10 s)."""
    path = tmp_path_factory.mktemp("thousand") / "tree.duckdb"
    synthetic_tree(path)
    return path


def render_in_chromium(html: Path, out: Path) -> tuple[str, str]:
    """Returns chromium's rendered DOM and its log; also writes a screenshot next to `out`."""
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr",
              "--v=0", "--virtual-time-budget=5000", "--window-size=1280,2400"]
    dom = subprocess.run(common + [f"--user-data-dir={out}-profile1", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120)
    shot = subprocess.run(common + [f"--user-data-dir={out}-profile2", f"--screenshot={out}", html.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr[-2000:] + shot.stderr[-2000:]
    return dom.stdout, dom.stderr + shot.stderr


def assert_offline(html: str) -> None:
    """No element loads anything from the network: every script is inline, no stylesheet link."""
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert not re.search(r"<(img|iframe)[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html, re.I)


def test_a_search_writes_the_report_at_its_end(searched):
    html = (searched / "runs" / "demo" / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in html
    for key in SECTIONS:
        assert f'<section id="{key}">' in html
    with TreeStore(searched / "runs" / "demo" / "tree.duckdb", read_only=True) as tree:
        best = tree.best()
        lessons = [n.analysis for n in tree.nodes(sorted(tree.node_ids())) if n.analysis]
    assert f"best score <b>{best.score:.6g}</b> (node {best.id})" in html
    assert lessons and all(lesson in unescape(html) for lesson in lessons)
    assert_offline(html)


def test_report_command_writes_the_file_where_asked(searched, monkeypatch, capsys):
    monkeypatch.chdir(searched)
    target = searched / "morning.html"
    assert main(["report", "demo", "-o", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    assert target.stat().st_size > 3_000_000  # plotly.min.js is inside, not fetched
    assert_offline(target.read_text())


def test_report_command_says_in_one_line_that_a_running_search_holds_the_tree(searched, monkeypatch, capsys):
    monkeypatch.chdir(searched)
    lock = SearchLock(searched / "runs" / "demo" / "search.lock")
    lock.acquire()
    try:
        assert main(["report", "demo"]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is running and holds its tree" in err and "report.html when it ends" in err


def test_a_report_failure_is_a_warning_not_the_searchs_failure(tmp_path, caplog):
    tree = TreeStore(tmp_path / "tree.duckdb")
    tree.close()  # every read now raises
    write_report_at_end(tree, "demo", tmp_path / "report.html")
    assert "could not write the HTML report" in caplog.text
    assert not (tmp_path / "report.html").exists()


def test_a_thousand_node_tree_renders_fast_small_and_escaped(thousand, tmp_path):
    started = time.perf_counter()
    with TreeStore(thousand, read_only=True) as tree:
        path = write_html_report(tree, "synthetic", tmp_path / "report.html")
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    print(f"1,000-node report: {seconds:.2f} s, {size / 1e6:.2f} MB")
    assert seconds < 20 and size < 10_000_000
    html = path.read_text()
    assert HOSTILE not in html and "<b>not bold</b>" not in html  # node text never becomes markup
    assert html.count("<details>") >= 19  # the leaderboard's diffs, collapsed (the root has none)
    assert "1000 lessons" in html and "node(s) scored more than once" in html
    assert "20 call(s) unknown" in html  # unknown prices are said, not summed as 0
    assert_offline(html)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); "
                                             ".ci/run installs it where it can")
@pytest.mark.parametrize("which", ["search", "synthetic"])
def test_the_report_renders_in_headless_chromium_without_console_errors(which, searched, thousand, tmp_path):
    if which == "search":
        html = searched / "runs" / "demo" / "report.html"
    else:
        with TreeStore(thousand, read_only=True) as tree:
            html = write_html_report(tree, "synthetic", tmp_path / "report.html")
    shot = tmp_path / f"report-{which}.png"
    dom, log = render_in_chromium(html, shot)
    charts = 5 if "node(s) scored more than once" in html.read_text() else 4  # the noise chart needs repeats
    assert dom.count('class="plot-container plotly"') == charts
    assert dom.count('class="main-svg"') >= 2 * charts  # Plotly draws each chart into SVG layers
    sections = dict(part.split('"', 1) for part in dom.split('<section id="')[1:])
    assert set(sections) == set(SECTIONS)
    for key in ("lineage", "leaderboard", "lessons", "runs"):
        assert "<table>" in sections[key] and "<td" in sections[key], key
    assert "Uncaught" not in log and ":CONSOLE" not in log, log[-3000:]  # any page console message
    assert "<script>alert" not in dom
    assert shot.stat().st_size > 50_000


def test_an_empty_tree_and_a_failed_root_still_render(tmp_path):
    with TreeStore(tmp_path / "tree.duckdb") as tree:
        empty = write_html_report(tree, "empty", tmp_path / "empty.html").read_text()
        tree.finish_node(Node(id=1, parent_id=None, round=0, code="x", code_hash="h",
                              status=Status.CANDIDATE_ERROR, error="SyntaxError: boom"))
        failed = write_html_report(tree, "failed", tmp_path / "failed.html").read_text()
    assert "<b>0</b> nodes" in empty and "no LLM calls recorded" in empty
    assert "best score <b>-</b>" in failed and "SyntaxError: boom" in failed


def chain_tree(path: Path, n: int, cost: float | None = 0.0) -> None:
    """Writes a chain of n ok nodes, the deepest the best, the root in the top 20, with LLM calls."""
    with TreeStore(path) as tree:
        for i in range(1, n + 1):
            code, score = f"x = {i}\n", 1.0 + (n - 10 if i == 1 else i) / 1000
            reply = LLMReply(text="", model="some/model", prompt_tokens=900, completion_tokens=60, cost_usd=cost)
            tree.finish_node(
                Node(id=i, parent_id=i - 1 or None, round=i - 1, code=code, code_hash=code_hash(code),
                     motivation="initial program" if i == 1 else f"step {i}",
                     edit="" if i == 1 else f"-x = {i - 1}\n+x = {i}\n", score=score, status=Status.OK),
                [EvalResult(outcome=Outcome.OK, score=score)],
                [("propose", reply, None)] if i > 1 else [])


PROBE = """<script>
const box = document.querySelector('#lineage table').parentElement, rows = document.querySelectorAll('#lineage tbody tr');
const b = box.getBoundingClientRect(), r = rows[rows.length - 1].getBoundingClientRect();
const root = [...document.querySelectorAll('#leaderboard tbody tr')].find(tr => tr.cells[1].innerText.trim() === '1');
const out = document.createElement('pre'); out.id = 'probe';
out.textContent = JSON.stringify({box: [b.top, b.bottom], last: [r.top, r.bottom],
  root: root.cells[6].innerText, tree: [...document.querySelectorAll('#tree text')].map(t => t.textContent)});
document.body.appendChild(out);
</script>"""


def probe_in_chromium(html: Path, tmp_path: Path) -> dict:
    """Returns what PROBE measured in the page as chromium laid it out (after the page's own scripts)."""
    import json

    probed = tmp_path / "probed.html"
    text = html.read_text()
    cut = text.rindex("</body>")
    probed.write_text(text[:cut] + PROBE + text[cut:])
    dom, _ = render_in_chromium(probed, tmp_path / "probed.png")
    return json.loads(unescape(dom.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0]))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_a_deep_chain_shows_the_best_in_lineage_and_tree_and_the_roots_note_apart(tmp_path):
    chain_tree(tmp_path / "tree.duckdb", 40)
    with TreeStore(tmp_path / "tree.duckdb", read_only=True) as tree:
        html = write_html_report(tree, "chain", tmp_path / "report.html")
    seen = probe_in_chromium(html, tmp_path)
    assert seen["box"][0] - 1 <= seen["last"][0] and seen["last"][1] <= seen["box"][1] + 1, seen  # node 40 in view
    assert "initial programno diff" not in seen["root"] and seen["root"].split("\n") == ["initial program", "no diff"]
    assert any(label.startswith("★ #40 ") for label in seen["tree"]), seen["tree"]  # the best is drawn, not folded


def test_the_tree_opens_where_the_best_is_visible_and_at_the_root_when_shallow(tmp_path, thousand):
    from evolveflow.morning_report.charts import TREE_LEVELS, tree
    from evolveflow.morning_report.data import gather

    chain_tree(tmp_path / "tree.duckdb", 40)
    with TreeStore(tmp_path / "tree.duckdb", read_only=True) as store:
        deep = gather(store, "chain")
    icicle = tree(deep).data[0]
    assert int(icicle.level) in deep.lineage and 40 - int(icicle.level) < icicle.maxdepth == TREE_LEVELS
    with TreeStore(thousand, read_only=True) as store:
        bushy = gather(store, "synthetic")
    icicle = tree(bushy).data[0]
    depth = len(bushy.lineage) - (bushy.lineage.index(int(icicle.level)) if icicle.level else 0)
    assert depth <= icicle.maxdepth  # the best of 1,000 nodes is in the columns drawn


@pytest.mark.parametrize("cost", [0.0, None])
def test_tokens_chart_draws_no_usd_axis_when_no_cost_is_above_zero(tmp_path, cost):
    from evolveflow.morning_report.charts import usage
    from evolveflow.morning_report.data import gather

    chain_tree(tmp_path / "tree.duckdb", 5, cost=cost)
    with TreeStore(tmp_path / "tree.duckdb", read_only=True) as store:
        fig = usage(gather(store, "chain"))
    assert [t.yaxis for t in fig.data] == ["y", "y"] and fig.layout.yaxis2.visible is False
    assert fig.layout.title.text == f"cost {'$0' if cost == 0 else 'unknown'} for every call: not drawn"


def test_tokens_chart_draws_the_usd_axis_when_some_cost_is_known(tmp_path):
    from evolveflow.morning_report.charts import usage
    from evolveflow.morning_report.data import gather

    chain_tree(tmp_path / "tree.duckdb", 5, cost=0.002)
    with TreeStore(tmp_path / "tree.duckdb", read_only=True) as store:
        fig = usage(gather(store, "chain"))
    assert [t.yaxis for t in fig.data] == ["y", "y", "y2"] and fig.data[2].y[-1] == pytest.approx(0.008)
    assert fig.layout.yaxis2.title.text == "USD (cumulative)" and not fig.layout.title.text
