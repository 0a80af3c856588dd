"""Real-subprocess tests of run_evaluation: both contracts, limits, kills, classification, sandbox levels."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from evolveflow.evaluation import (
    EvaluatorConfigError,
    EvaluatorSpec,
    bwrap_problem,
    check_evaluator,
    run_evaluation,
    sandbox_level,
    sweep_orphans,
)
from evolveflow.records import Outcome

REPO = Path(__file__).resolve().parents[1]
BWRAP_PROBLEM = bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"bwrap unusable: {BWRAP_PROBLEM}")
LEVELS = ["process", pytest.param("bwrap", marks=needs_bwrap)]

# An executable evaluator that *is* the candidate: whatever the candidate prints is the result.
PASSTHROUGH = '#!/bin/sh\nexec python3 "$1"\n'
# A Python evaluator that runs the candidate and reports its stdout as a metric.
RUN_AND_REPORT = '''
import subprocess, sys
def evaluate(program_path):
    done = subprocess.run([sys.executable, program_path], capture_output=True, text=True)
    return {"score": 1.0, "metrics": {"out": done.stdout.strip(), "err": done.stderr.strip()[-300:]}}
'''


def make_executable(folder: Path, text: str, name: str = "eval.sh") -> Path:
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def make_python(folder: Path, text: str, name: str = "evaluator.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def alive_pids_with(marker: str) -> list[int]:
    """Processes (not zombies) whose command line contains marker, excluding this test process."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(name))
    return found


def code(text: str) -> str:
    return textwrap.dedent(text)


# --- happy paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_python_evaluator_scores_a_candidate(tmp_path, level):
    evaluator = make_python(tmp_path, '''
        import runpy
        def evaluate(program_path):
            namespace = runpy.run_path(program_path)
            return {"score": namespace["solve"](3), "metrics": {"checked": 3}}
    ''')
    result = run_evaluation("def solve(n):\n    return n * 2.5\n", EvaluatorSpec(path=evaluator, sandbox=level))
    assert result.outcome is Outcome.OK, result
    assert (result.score, result.metrics, result.exit_code, result.error) == (7.5, {"checked": 3}, 0, None)
    assert 0 < result.duration_s < 10


def test_candidate_prints_cannot_forge_a_python_evaluators_result(tmp_path):
    evaluator = make_python(tmp_path, '''
        import runpy
        def evaluate(program_path):
            runpy.run_path(program_path)
            return {"score": 0.1}
    ''')
    forged = 'print(\'{"score": 999}\')\nopen("results.json", "w").write(\'{"score": 999}\')\n'
    result = run_evaluation(forged, EvaluatorSpec(path=evaluator))
    assert result.score == 0.1
    assert '{"score": 999}' in result.stdout_tail


@pytest.mark.parametrize("level", LEVELS)
def test_executable_evaluator_last_json_line_counts(tmp_path, level):
    evaluator = make_executable(tmp_path, textwrap.dedent('''\
        #!/bin/sh
        echo "compiling $1"
        echo '{"score": -1}'
        echo "running"
        echo '{"score": 4, "metrics": {"runs": 2}}'
        echo "bye"
    '''))
    result = run_evaluation("x = 1\n", EvaluatorSpec(path=evaluator, sandbox=level))
    assert (result.outcome, result.score, result.metrics) == (Outcome.OK, 4.0, {"runs": 2})
    assert result.stdout_tail.startswith("compiling /") and "program.py" in result.stdout_tail


@pytest.mark.parametrize("key", ["eval_score", "combined_score"])
def test_alternative_score_keys(tmp_path, key):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    result = run_evaluation(f'print(\'{{"{key}": 0.75, "accuracy": 0.9}}\')', EvaluatorSpec(path=evaluator))
    assert (result.outcome, result.score, result.metrics) == (Outcome.OK, 0.75, {"accuracy": 0.9})


def test_results_json_is_read_when_stdout_has_no_object(tmp_path):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = 'import json\nprint("no json here")\njson.dump({"score": 2, "metadata": {"m": 1}}, open("results.json", "w"))\n'
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator))
    assert (result.outcome, result.score, result.metrics) == (Outcome.OK, 2.0, {"m": 1})


def test_filename_is_respected(tmp_path):
    evaluator = make_executable(tmp_path, '#!/bin/sh\necho "{\\"score\\": 1, \\"metrics\\": {\\"name\\": \\"$(basename $1)\\"}}"\n')
    result = run_evaluation("int main(){}", EvaluatorSpec(path=evaluator), filename="solution.c")
    assert result.metrics == {"name": "solution.c"}
    with pytest.raises(ValueError, match="filename must be a plain file name"):
        run_evaluation("", EvaluatorSpec(path=evaluator), filename="../escape.py")


def test_seed_reaches_evaluate_when_it_has_a_seed_parameter(tmp_path):
    with_seed = make_python(tmp_path, '''
        import os
        def evaluate(program_path, seed=None):
            return {"score": 1, "metrics": {"seed": seed, "env": os.environ.get("EVOLVEFLOW_SEED")}}
    ''', name="seeded.py")
    spec = EvaluatorSpec(path=with_seed)
    assert run_evaluation("", spec, seed=42).metrics == {"seed": 42, "env": "42"}
    assert run_evaluation("", spec).metrics == {"seed": None, "env": None}
    without_seed = make_python(tmp_path, 'def evaluate(program_path):\n    return {"score": 3}\n', name="plain.py")
    assert run_evaluation("", EvaluatorSpec(path=without_seed), seed=42).score == 3.0


# --- failures of the candidate ----------------------------------------------------------------

def test_exception_in_evaluate_is_a_candidate_error_with_its_message(tmp_path):
    evaluator = make_python(tmp_path, '''
        def evaluate(program_path):
            raise ValueError("matrix is singular")
    ''')
    result = run_evaluation("", EvaluatorSpec(path=evaluator))
    assert result.outcome is Outcome.CANDIDATE_ERROR
    assert result.error == "ValueError: matrix is singular"
    assert result.exit_code == 1
    assert "Traceback" in result.stderr_tail and 'raise ValueError("matrix is singular")' in result.stderr_tail


def test_nonzero_exit_reports_last_stderr_lines(tmp_path):
    evaluator = make_executable(tmp_path, '#!/bin/sh\necho "compile error: missing ;" >&2\nexit 3\n')
    result = run_evaluation("", EvaluatorSpec(path=evaluator))
    assert (result.outcome, result.exit_code, result.error) == (
        Outcome.CANDIDATE_ERROR, 3, "compile error: missing ;")


@pytest.mark.parametrize("level", LEVELS)
def test_segfault_is_a_candidate_error(tmp_path, level):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox=level))
    assert result.outcome is Outcome.CANDIDATE_ERROR
    assert result.error == "evaluator died from SIGSEGV"


def test_no_json_and_bad_json(tmp_path):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    spec = EvaluatorSpec(path=evaluator)
    silent = run_evaluation('print("score = 3")', spec)
    assert silent.outcome is Outcome.CANDIDATE_ERROR
    assert silent.error == "the evaluator printed no JSON object on stdout and wrote no results.json"
    broken = run_evaluation('open("results.json", "w").write("{score: 3")', spec)
    assert broken.error.startswith("results.json is not valid JSON")
    listed = run_evaluation('open("results.json", "w").write("[3]")', spec)
    assert listed.error == "the evaluator's result is a JSON list, not an object"


def test_results_json_symlink_is_not_followed(tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"score": 5}')
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    result = run_evaluation(f'import os\nos.symlink({str(secret)!r}, "results.json")', EvaluatorSpec(path=evaluator, sandbox="process"))
    assert result.error == "results.json is a symbolic link, which evolveflow does not follow"


@pytest.mark.parametrize("value, message", [
    ("float('nan')", "score is NaN"),
    ("float('inf')", "score is infinite (inf)"),
    ("'high'", "score is 'high' (a JSON str), not a number"),
    ("True", "score is True (a JSON bool), not a number"),
])
def test_unusable_scores_from_evaluate(tmp_path, value, message):
    evaluator = make_python(tmp_path, f'''
        def evaluate(program_path):
            return {{"score": {value}, "metrics": {{"ratio": float("nan"), "ok": 1}}}}
    ''')
    result = run_evaluation("", EvaluatorSpec(path=evaluator))
    assert (result.outcome, result.error, result.score) == (Outcome.CANDIDATE_ERROR, message, None)
    assert result.metrics == {"ratio": "NaN", "ok": 1}


def test_missing_score_and_error_without_score(tmp_path):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    spec = EvaluatorSpec(path=evaluator)
    missing = run_evaluation('print(\'{"metrics": {"a": 1}}\')', spec)
    assert missing.error == "no 'score' (or eval_score/combined_score) in the evaluator's result"
    assert missing.metrics == {"a": 1}
    infeasible = run_evaluation('print(\'{"error": "deadline missed", "metrics": {"late": 2}}\')', spec)
    assert (infeasible.outcome, infeasible.error, infeasible.metrics) == (
        Outcome.CANDIDATE_ERROR, "deadline missed", {"late": 2})


def test_evaluate_returning_a_list(tmp_path):
    evaluator = make_python(tmp_path, "def evaluate(program_path):\n    return [1, 2]\n")
    result = run_evaluation("", EvaluatorSpec(path=evaluator))
    assert result.error == "the evaluator's result is a JSON list, not an object"


def test_invalid_utf8_output_does_not_crash(tmp_path):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = ('import sys\nsys.stdout.buffer.write(b"\\xff\\xfe bad\\n")\nsys.stderr.buffer.write(b"\\xc3(\\n")\n'
                 'print(\'{"score": 1}\')\n')
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator))
    assert result.outcome is Outcome.OK
    assert "\ufffd\ufffd bad" in result.stdout_tail and "\ufffd(" in result.stderr_tail


# --- limits and kills ---------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_timeout_kills_the_whole_tree(tmp_path, level):
    marker = f"sleeper-{uuid.uuid4().hex}"
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = code(f'''
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}-child"])
        if os.fork() == 0:  # a double-forked, setsid'd daemon escapes the process group
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", "{marker}-daemon"])
            os._exit(0)
        time.sleep(0.3)
        print("spawned", flush=True)
        time.sleep(600)
    ''')
    started = time.monotonic()
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox=level, timeout_s=1.5))
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.CANDIDATE_ERROR
    assert result.error == "timed out after 1.5 s"
    assert "spawned" in result.stdout_tail  # the children did exist
    assert elapsed < 5
    assert alive_pids_with(marker) == []


@pytest.mark.parametrize("level", LEVELS)
def test_cancel_kills_the_whole_tree_and_raises_aborted(tmp_path, level):
    from evolveflow.abort import Aborted

    marker = f"cancelled-{uuid.uuid4().hex}"
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = code(f'''
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}-child"])
        print("spawned", flush=True)
        time.sleep(600)
    ''')
    cancel = threading.Event()
    threading.Timer(1.5, cancel.set).start()
    with pytest.raises(Aborted):  # an abort is no outcome of the candidate: not a timeout, not an error
        run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox=level, timeout_s=600), cancel=cancel)
    assert alive_pids_with(marker) == []
    with pytest.raises(Aborted):  # once cancelled, nothing is started
        run_evaluation('print("{\\"score\\": 1}")', EvaluatorSpec(path=evaluator, sandbox=level), cancel=cancel)


@pytest.mark.parametrize("level", LEVELS)
def test_background_leftovers_are_killed_and_void_the_result(tmp_path, level):
    marker = f"leftover-{uuid.uuid4().hex}"
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = code(f'''
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])
        print('{{"score": 1}}')
    ''')
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox=level, timeout_s=20))
    # A process alive after the evaluator exited could have rewritten its result: not trusted.
    assert result.outcome is Outcome.CANDIDATE_ERROR and result.score is None
    assert result.error.startswith("1 process(es) of this evaluation were still running when the evaluator exited")
    assert result.duration_s < 5  # did not wait for the sleeper that holds our pipes
    assert alive_pids_with(marker) == []


@pytest.mark.parametrize("level", LEVELS)
def test_children_the_evaluation_waits_for_leave_the_result_trusted(tmp_path, level):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = code('''
        import subprocess, sys
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.2)"], check=True)
        print('{"score": 1}')
    ''')
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox=level, timeout_s=20))
    assert (result.outcome, result.score) == (Outcome.OK, 1.0)


@pytest.mark.parametrize("level", LEVELS)
def test_huge_output_is_killed_quickly_and_capture_stays_bounded(tmp_path, level):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n"
    spec = EvaluatorSpec(path=evaluator, sandbox=level, kill_output_bytes=8_000_000, max_output_bytes=100_000)
    started = time.monotonic()
    result = run_evaluation(candidate, spec)
    assert result.outcome is Outcome.CANDIDATE_ERROR
    assert result.error == "printed more than 8000000 bytes on stdout (output limit); killed"
    assert time.monotonic() - started < 5
    assert len(result.stdout_tail) == 2000 and set(result.stdout_tail) == {"x"}


def test_large_logs_keep_only_the_tail_and_still_find_the_result(tmp_path):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = "for i in range(50000):\n    print('log line', i)\nprint('{\"score\": 9}')\n"
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator, max_output_bytes=50_000))
    assert (result.outcome, result.score) == (Outcome.OK, 9.0)
    assert result.stdout_tail.endswith('log line 49999\n{"score": 9}\n')


@pytest.mark.parametrize("level", LEVELS)
def test_memory_hog_fails_fast_as_candidate_error(tmp_path, level):
    evaluator = make_python(tmp_path, '''
        import runpy
        def evaluate(program_path):
            runpy.run_path(program_path)
            return {"score": 1}
    ''')
    candidate = "hog = bytearray(50 * 1024 ** 3)\n"
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox=level, memory_mb=1024))
    assert result.outcome is Outcome.CANDIDATE_ERROR
    assert result.error == "MemoryError"
    assert result.duration_s < 5


@needs_bwrap
def test_bounded_fork_bomb_is_contained_under_bwrap(tmp_path):
    filename = f"bomb_{uuid.uuid4().hex}.py"
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    candidate = code('''
        import os, time
        children = 0
        for _ in range(200):
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            children += 1
        print("forked", children, flush=True)
        time.sleep(600)
    ''')
    started = time.monotonic()
    result = run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox="bwrap", timeout_s=2), filename=filename)
    assert result.error == "timed out after 2.0 s"
    assert "forked 200" in result.stdout_tail
    assert time.monotonic() - started < 6
    assert alive_pids_with(filename) == []


# --- infrastructure errors ----------------------------------------------------------------

def test_exit_75_is_an_infra_error(tmp_path):
    evaluator = make_executable(tmp_path, '#!/bin/sh\necho "license server unreachable" >&2\nexit 75\n')
    result = run_evaluation("", EvaluatorSpec(path=evaluator))
    assert result.outcome is Outcome.INFRA_ERROR
    assert result.error == "evaluator exited with status 75 (EX_TEMPFAIL, temporary failure): license server unreachable"


def test_retry_true_is_an_infra_error(tmp_path):
    evaluator = make_python(tmp_path, 'def evaluate(program_path):\n    return {"retry": True, "error": "GPU busy"}\n')
    result = run_evaluation("", EvaluatorSpec(path=evaluator))
    assert (result.outcome, result.error) == (Outcome.INFRA_ERROR, "GPU busy")


@pytest.mark.parametrize("level", LEVELS)
def test_external_sigkill_of_the_evaluator_is_an_infra_error(tmp_path, level):
    evaluator = make_executable(tmp_path, "#!/usr/bin/env python3\nimport time\ntime.sleep(60)\n",
                                name=f"victim_{uuid.uuid4().hex}.py.sh")
    killed: list[int] = []

    def kill_it_from_outside():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not killed:
            for pid in alive_pids_with(evaluator.name):
                try:
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"python" in argv[0] and b"-c" not in argv:  # the evaluator, not bwrap or our launcher
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_it_from_outside)
    killer.start()
    result = run_evaluation("", EvaluatorSpec(path=evaluator, sandbox=level, timeout_s=30))
    killer.join()
    assert killed
    assert result.outcome is Outcome.INFRA_ERROR
    assert "killed by SIGKILL, which evolveflow did not send" in result.error


def test_evaluator_py_without_evaluate_at_run_time_is_infra(tmp_path):
    evaluator = make_python(tmp_path, "def evaluat(program_path):\n    return {}\n")
    result = run_evaluation("", EvaluatorSpec(path=evaluator))
    assert result.outcome is Outcome.INFRA_ERROR
    assert "has no function evaluate(program_path)" in result.error


# --- environment ----------------------------------------------------------------------------

@pytest.mark.parametrize("level", LEVELS)
def test_environment_is_an_allow_list_without_secrets(tmp_path, level, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-not-real")
    evaluator = make_python(tmp_path, '''
        import os, shutil
        def evaluate(program_path):
            return {"score": 1, "metrics": {"env": dict(os.environ), "cwd": os.getcwd(),
                                            "python3": shutil.which("python3")}}
    ''')
    spec = EvaluatorSpec(path=evaluator, sandbox=level, extra_env={"MY_DATASET": "/data/x"})
    result = run_evaluation("", spec, seed=5)
    env, cwd = result.metrics["env"], result.metrics["cwd"]
    assert "OPENAI_API_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "sk-test-not-real" not in json.dumps(result.metrics)
    assert env["HOME"] == cwd and env["TMPDIR"] == f"{cwd}/tmp"
    assert env["EVOLVEFLOW_PYTHON"] == sys.executable and env["EVOLVEFLOW_SEED"] == "5"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert result.metrics["python3"] == str(Path(sys.executable).parent / "python3")
    assert env["MY_DATASET"] == "/data/x"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert not Path(cwd).exists()  # the working directory is removed afterwards


# --- what the sandbox levels protect against (measured) ------------------------------------

WRITE_ATTEMPT = '''
import sys
results = []
for target in sys.argv[1:]:
    try:
        open(target, "w").write("escaped")
        results.append("written")
    except OSError as exc:
        results.append(type(exc).__name__ + ": " + exc.strerror)
print(results)
'''


def try_writes(tmp_path, level, targets):
    evaluator = make_executable(tmp_path, '#!/bin/sh\nexec python3 "$1" ' + " ".join(map(str, targets)) + "\n",
                                name="write_eval.sh")
    candidate = WRITE_ATTEMPT + 'open("own.txt", "w").write("fine")\nprint(\'{"score": 1}\')\n'
    return run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox=level))


@needs_bwrap
def test_bwrap_blocks_writes_outside_the_working_directory(tmp_path):
    experiment = tmp_path / "experiment"  # stands for the experiment's databases, beside the evaluator
    experiment.mkdir()
    in_python_prefix = Path(sys.prefix) / f"evolveflow-escape-{uuid.uuid4().hex}"  # outside /tmp
    try:
        result = try_writes(tmp_path, "bwrap", [experiment / "nodes.duckdb", in_python_prefix])
        assert result.outcome is Outcome.OK  # writing its own working directory works
        assert "['OSError: Read-only file system', 'OSError: Read-only file system']" in result.stdout_tail
        assert not (experiment / "nodes.duckdb").exists() and not in_python_prefix.exists()
    finally:
        in_python_prefix.unlink(missing_ok=True)


def test_process_level_does_not_block_writes_outside(tmp_path):
    """Documented limitation, measured: the plain process level can write anywhere the user can."""
    target = tmp_path / "experiment.db"
    result = try_writes(tmp_path, "process", [target])
    assert "['written']" in result.stdout_tail
    assert target.read_text() == "escaped"


@needs_bwrap
def test_hidden_paths_are_invisible_under_bwrap(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "nodes.duckdb").write_text("other candidates' code")
    reader = f'import json, os\nprint(json.dumps({{"score": 1, "metrics": {{"seen": os.listdir({str(runs)!r})}}}}))\n'
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    # The evaluator's folder is re-mounted read-only, so without hiding the runs are readable.
    visible = run_evaluation(reader, EvaluatorSpec(path=evaluator, sandbox="bwrap"))
    hidden = run_evaluation(reader, EvaluatorSpec(path=evaluator, sandbox="bwrap", hidden_paths=(runs,)))
    assert visible.metrics == {"seen": ["nodes.duckdb"]}
    assert hidden.metrics == {"seen": []}


NETWORK_ATTEMPT = '''
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    print("connected")
except OSError as exc:
    print("blocked:", type(exc).__name__)
'''


def _network_namespaces_work() -> bool:
    return subprocess.run(["unshare", "--net", "--user", "true"], capture_output=True).returncode == 0 \
        if shutil.which("unshare") else False


@pytest.mark.parametrize("level, network, expected", [
    pytest.param("process", "none", "blocked: ConnectionRefusedError",
                 marks=pytest.mark.skipif(not _network_namespaces_work(), reason="no network namespaces here")),
    ("process", "host", "connected"),
    pytest.param("bwrap", "none", "blocked: ConnectionRefusedError", marks=needs_bwrap)])
def test_the_hosts_loopback_is_out_of_reach_unless_network_host(tmp_path, level, network, expected):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        evaluator = make_python(tmp_path, RUN_AND_REPORT)
        candidate = NETWORK_ATTEMPT.format(port=server.getsockname()[1])
        result = run_evaluation(candidate, EvaluatorSpec(path=evaluator, sandbox=level, network=network))
    assert result.metrics["out"] == expected


# --- configuration checks -------------------------------------------------------------------

def test_check_evaluator_accepts_good_evaluators(tmp_path):
    check_evaluator(EvaluatorSpec(path=make_executable(tmp_path, PASSTHROUGH)))
    check_evaluator(EvaluatorSpec(path=make_python(tmp_path, RUN_AND_REPORT)))


def test_check_evaluator_rejects_missing_file(tmp_path):
    missing = tmp_path / "nope.sh"
    with pytest.raises(EvaluatorConfigError, match=f"evaluator {missing} does not exist"):
        check_evaluator(EvaluatorSpec(path=missing))


def test_check_evaluator_rejects_non_executable_and_shebang_less_scripts(tmp_path):
    script = tmp_path / "eval.sh"
    script.write_text("#!/bin/sh\necho '{}'\n")
    with pytest.raises(EvaluatorConfigError, match=f"is not executable; run: chmod \\+x {script}"):
        check_evaluator(EvaluatorSpec(path=script))
    bare = make_executable(tmp_path, "echo '{}'\n", name="bare.sh")
    with pytest.raises(EvaluatorConfigError, match="has no '#!' line"):
        check_evaluator(EvaluatorSpec(path=bare))


def test_check_evaluator_rejects_python_without_evaluate(tmp_path):
    evaluator = make_python(tmp_path, "def score(path):\n    return 1\n")
    with pytest.raises(EvaluatorConfigError, match=r"has no function evaluate\(program_path\)"):
        check_evaluator(EvaluatorSpec(path=evaluator))


def test_check_evaluator_reports_import_errors_and_bad_signatures(tmp_path):
    broken = make_python(tmp_path, "import numpy_that_does_not_exist\n", name="broken.py")
    with pytest.raises(EvaluatorConfigError, match="imports 'numpy_that_does_not_exist', which .* cannot import: set evaluation.python"):
        check_evaluator(EvaluatorSpec(path=broken))
    two_args = make_python(tmp_path, "def evaluate(program_path, dataset):\n    return {}\n", name="two.py")
    with pytest.raises(EvaluatorConfigError, match=r"its signature is evaluate\(program_path, dataset\)"):
        check_evaluator(EvaluatorSpec(path=two_args))


def test_check_evaluator_rejects_an_evaluator_inside_a_hidden_path(tmp_path):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    with pytest.raises(EvaluatorConfigError, match=f"is inside hidden path {tmp_path}"):
        check_evaluator(EvaluatorSpec(path=evaluator, hidden_paths=(tmp_path,)))


def test_sandbox_level_is_reported(tmp_path):
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    assert sandbox_level(EvaluatorSpec(path=evaluator, sandbox="process")) == "process"
    expected = "bwrap" if BWRAP_PROBLEM is None else "process"
    assert sandbox_level(EvaluatorSpec(path=evaluator)) == expected


def test_relative_hidden_paths_are_refused(tmp_path):
    with pytest.raises(ValueError, match="hidden_paths must be absolute"):
        EvaluatorSpec(path=tmp_path / "e.sh", hidden_paths=(Path("runs"),))


REMOUNT_ATTEMPT = '''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_RELATIME = 2, 4, 32, 4096, 1 << 21
status = libc.mount(b"none", b"/", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_RELATIME, None)
print("remount:", os.strerror(ctypes.get_errno()) if status else "succeeded")
try:
    open(sys.argv[1], "w").write("escaped")
    print("write: succeeded")
except OSError as exc:
    print("write:", exc.strerror)
'''


@needs_bwrap
def test_sandboxed_root_cannot_remount_the_filesystem_writable(tmp_path):
    """Measured: as root, without --cap-drop ALL and --disable-userns this remount succeeds."""
    target = Path(sys.prefix) / f"evolveflow-remount-{uuid.uuid4().hex}"
    evaluator = make_executable(tmp_path, f'#!/bin/sh\nexec python3 "$1" {target}\n')
    try:
        result = run_evaluation(REMOUNT_ATTEMPT, EvaluatorSpec(path=evaluator, sandbox="bwrap"))
        assert result.stdout_tail == "remount: Operation not permitted\nwrite: Read-only file system\n"
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


def start_framework(evaluator: Path, level: str, candidate: str, marker: str) -> subprocess.Popen:
    """Run run_evaluation in a separate 'framework' process that the test can SIGKILL."""
    # The marker travels by environment so that only the evaluator's processes carry it in argv.
    script = textwrap.dedent(f'''
        import os
        from evolveflow.evaluation import EvaluatorSpec, run_evaluation
        run_evaluation(os.environ["CANDIDATE"], EvaluatorSpec(path={str(evaluator)!r}, sandbox={level!r}, timeout_s=60),
                       filename=os.environ["MARKER"] + ".py")
    ''')
    return subprocess.Popen([sys.executable, "-c", script], env={
        **os.environ, "PYTHONPATH": str(REPO), "MARKER": marker, "CANDIDATE": candidate})


def user_code_pids(marker: str) -> list[int]:
    """Marker processes other than bwrap's own (a bwrap killed in its setup never ran user code)."""
    found = []
    for pid in alive_pids_with(marker):
        try:
            program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue  # ended meanwhile
        if Path(program.decode()).name != "bwrap":
            found.append(pid)
    return found


def wait_until(condition, timeout_s: float, polls_in_a_row: int = 3) -> bool:
    """True once condition held on consecutive polls (a process in execve briefly has no cmdline)."""
    deadline, streak = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        streak = streak + 1 if condition() else 0
        if streak >= polls_in_a_row:
            return True
        time.sleep(0.02)
    return False


def clean_up_framework(parent: subprocess.Popen, marker: str) -> None:
    parent.kill()
    parent.wait()
    for pid in alive_pids_with(marker):
        os.kill(pid, signal.SIGKILL)
    # The killed framework had no chance to remove its working directory.
    for program in Path(tempfile.gettempdir()).glob(f"evolveflow-eval-*/{marker}.py"):
        shutil.rmtree(program.parent)


@pytest.mark.parametrize("level", LEVELS)
def test_killing_the_framework_mid_run(tmp_path, level):
    """bwrap: the whole sandbox dies with evolveflow. process: only the evaluator process itself
    dies (parent-death signal); its children are orphans until sweep_orphans() (measured)."""
    marker = f"orphan-{uuid.uuid4().hex}"
    evaluator = make_executable(tmp_path, '#!/bin/sh\npython3 "$1"\n')  # no exec: the candidate is a child
    candidate = code(f'''
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}-grandchild"])
        time.sleep(600)
    ''')
    parent = start_framework(evaluator, level, candidate, marker)
    try:
        assert wait_until(lambda: alive_pids_with(f"{marker}-grandchild"), 10, 1), "the candidate never started"
        parent.kill()  # evolveflow dies without any chance to clean up
        parent.wait()
        if level == "bwrap":
            assert wait_until(lambda: not alive_pids_with(marker), 5), alive_pids_with(marker)
        else:
            # Checked at once, because any evolveflow process on this machine may sweep orphans.
            assert alive_pids_with(f"{marker}-grandchild"), "the candidate's child outlives evolveflow"
            sweep_orphans()
        assert wait_until(lambda: not alive_pids_with(marker), 5), alive_pids_with(marker)
    finally:
        clean_up_framework(parent, marker)


@pytest.mark.parametrize("level", LEVELS)
def test_killing_the_framework_while_the_sandbox_starts(tmp_path, level):
    """Killed within the first milliseconds, no user code may start or survive."""
    evaluator = make_executable(tmp_path, PASSTHROUGH)
    for _ in range(3):
        marker = f"early-{uuid.uuid4().hex}"
        parent = start_framework(evaluator, level, "import time\ntime.sleep(600)\n", marker)
        try:
            assert wait_until(lambda: alive_pids_with(marker), 10, 1)
            parent.kill()
            parent.wait()
            # Typically gone within 0.1 s; the margin is for a loaded machine.
            assert wait_until(lambda: not user_code_pids(marker), 15), user_code_pids(marker)
            sweep_orphans()  # a bwrap caught in its setup handshake is only removed by the sweep
            assert wait_until(lambda: not alive_pids_with(marker), 5)
        finally:
            clean_up_framework(parent, marker)
