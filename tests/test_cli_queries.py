"""`lessons`, `sql`, `export --parquet` and `best --diff` on a real tree, and their refusal while a search runs."""
from __future__ import annotations

import json

import duckdb
import pytest

from evolveflow.experiment import load_experiment
from evolveflow.search_lock import SearchLock
from evolveflow.tree_queries import QueryRefused, read_only, run_sql
from tests.test_cli_tables import BEST_CODE, build_experiment, cli


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    build_experiment(root)
    return root


def test_sql_prints_a_table_or_json(project):
    done = cli(project, "sql", "demo", "SELECT id, status, score FROM nodes ORDER BY id")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["id", "status", "score"]
    assert lines[3].split() == ["3", "candidate_error", "NULL"]
    assert lines[4].split() == ["4", "ok", "0.912346"]
    rows = json.loads(cli(project, "sql", "demo", "SELECT id, score FROM nodes WHERE id = 4", "--json").stdout)
    assert rows == [{"id": 4, "score": 0.912345678}]  # JSON keeps full precision


@pytest.mark.parametrize("query, message", [
    ("DELETE FROM nodes", "only a read statement"),
    ("SELECT 1; DROP TABLE nodes", "exactly one statement, not 2"),
    ("COPY nodes TO 'leak.csv'", "not COPY"),
    ("SELEC id FROM nodes", "sql: Parser Error"),
    ("SELECT nope FROM nodes", "sql: Binder Error"),
])
def test_sql_refuses_anything_but_one_read_statement(project, query, message):
    done = cli(project, "sql", "demo", query)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("evolveflow: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (project / "leak.csv").exists()
    assert cli(project, "sql", "demo", "SELECT count(*) AS n FROM nodes", "--json").stdout.count('"n": 4') == 1


def test_the_connection_itself_refuses_writes(project):
    exp = load_experiment("demo", project)
    with read_only(exp, "sql") as con:
        with pytest.raises(duckdb.InvalidInputException, match="read-only"):
            con.execute("DELETE FROM nodes")
        with pytest.raises(QueryRefused):
            run_sql(con, "UPDATE nodes SET score = 1")
        assert run_sql(con, "SHOW TABLES")[1]


def test_export_writes_parquet_that_reads_back(project, tmp_path):
    out = tmp_path / "parquet"
    done = cli(project, "export", "demo", "--parquet", str(out))
    assert done.returncode == 0, done.stderr
    assert f"{out / 'nodes.parquet'}: 4 rows" in done.stdout
    counts = {name: duckdb.sql(f"SELECT count(*) FROM '{out / name}.parquet'").fetchall()[0][0]
              for name in ("nodes", "attempts", "llm_calls", "runs")}
    assert counts == {"nodes": 4, "attempts": 5, "llm_calls": 2, "runs": 1}
    best = duckdb.sql(f"SELECT id, score, code FROM '{out}/nodes.parquet' ORDER BY score DESC LIMIT 1").fetchall()[0]
    assert best == (4, 0.912345678, BEST_CODE)


def test_best_diff_is_from_the_parent(project):
    done = cli(project, "best", "demo", "--diff")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "--- node 2 (parent)", "+++ node 4 (best)", "@@ -1,2 +1,2 @@", " def approximate(x):",
        "-    return 0.99 * x", "+    return x - x ** 3 / 6"]


def test_lessons_newest_first_and_by_query(project):
    done = cli(project, "lessons", "demo")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0] == ["node", "round", "score", "status", "lesson"]
    assert [r[:4] for r in rows[1:]] == [["4", "3", "0.912346", "ok"], ["3", "2", "-", "candidate_error"],
                                         ["2", "1", "0.600000", "ok"]]
    assert " ".join(rows[1][4:]) == "The cubic Taylor term fits the curve well."  # one line a lesson
    assert len(cli(project, "lessons", "demo", "--limit", "1").stdout.splitlines()) == 2

    found = cli(project, "lessons", "demo", "--query", "why does dividing fail at zero?", "--limit", "2")
    assert found.returncode == 0, found.stderr
    hits = [line.split() for line in found.stdout.splitlines()[1:]]
    assert hits[0][:4] == ["3", "2", "-", "candidate_error"]  # the lesson about division ranks first
    assert all("Taylor series of sin" not in " ".join(h) for h in hits)  # knowledge is not a lesson
    nothing = cli(project, "lessons", "demo", "--query", "quaternion")
    assert nothing.returncode == 0 and nothing.stdout == "demo: no lesson matches 'quaternion'\n"


def test_commands_that_need_the_tree_name_the_running_search(project, tmp_path):
    exp = load_experiment("demo", project)
    with SearchLock(exp.lock_path):
        pid = json.loads(exp.lock_path.read_text())["pid"]
        for args in (["sql", "demo", "SELECT 1"], ["export", "demo", "--parquet", str(tmp_path / "p")],
                     ["lessons", "demo"], ["best", "demo", "--diff"]):
            done = cli(project, *args)
            assert done.returncode == 2, args
            assert done.stderr.startswith(f"evolveflow: error: a search is running on demo (pid {pid}"), done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()
