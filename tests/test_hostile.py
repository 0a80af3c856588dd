"""The hostile set: one evaluator that attacks the machine, run at every sandbox level this machine
offers. Each case is a row of the level table in docs/sandbox.md; each assertion is what that row
says. Real subprocesses, real bwrap, real namespaces and uids; loopback only.

Levels (ids):
* bwrap: bubblewrap (as root: an unprivileged uid inside, see sandbox.bwrap_prefix)
* process-user: no bubblewrap, evolveflow as root, the evaluator as a fresh unprivileged uid
  (needs an interpreter other users can reach: /usr/bin/python3 here, not a Python under /root)
* process: no bubblewrap, same uid as evolveflow (non-root, or separate_user off)
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from evolveflow.evaluation import EvaluatorSpec, bwrap_problem, isolation_for, run_evaluation
from evolveflow.records import Outcome

ROOT = os.geteuid() == 0
SYSTEM_PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)
                      and not Path(p).resolve().is_relative_to(Path.home())), None)
SECRET = "evolveflow-hostile-secret-4242"

LEVELS = [
    pytest.param("bwrap", marks=pytest.mark.skipif(bwrap_problem() is not None, reason=f"{bwrap_problem()}")),
    pytest.param("process-user", marks=pytest.mark.skipif(not ROOT or SYSTEM_PYTHON is None,
                                                          reason="needs root and a Python outside the home")),
    "process",
]

# The evaluator is the attacker (a candidate it imported would have the same powers). Each case
# returns "blocked: ..." or "exposed: ..." as the metric "result".
HOSTILE = r'''
import errno, json, os, socket, subprocess, sys, time

def ancestors_environ(secret):
    pid, seen = os.getpid(), []
    for _ in range(6):
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        if pid <= 1:
            break
        try:
            if secret.encode() in open(f"/proc/{pid}/environ", "rb").read():
                return f"exposed: read it from /proc/{pid}/environ"
            seen.append(f"{pid}: no secret")
        except OSError as exc:
            seen.append(f"{pid}: {exc.strerror}")
    # Any process on the machine carrying it?
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if secret.encode() in open(f"/proc/{name}/environ", "rb").read():
                    return f"exposed: read it from /proc/{name}/environ"
            except OSError:
                pass
    return "blocked: " + "; ".join(seen or ["no ancestor visible"])

def write(path):
    try:
        with open(path, "a") as handle:
            handle.write("pwned\n")
        return f"exposed: wrote {path}"
    except OSError as exc:
        return f"blocked: {exc.strerror}"

def read(path):
    try:
        return "exposed: " + open(path).read()[:40]
    except OSError as exc:
        return f"blocked: {exc.strerror}"

def connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "exposed: connected"
    except OSError as exc:
        return f"blocked: {type(exc).__name__}"

def fork_bomb(limit):
    children = []
    try:
        for _ in range(limit):
            children.append(subprocess.Popen(["sleep", "30"]))
        return f"exposed: started {len(children)}"
    except OSError as exc:
        return f"blocked: after {len(children)}: {exc.strerror}"
    finally:
        for child in children:
            child.kill()
            child.wait()

def allocate(gigabytes):
    start = time.monotonic()
    try:
        block = bytearray(gigabytes << 30)
        return f"exposed: got {len(block) >> 30} GB"
    except MemoryError:
        return f"blocked: MemoryError in {time.monotonic() - start:.3f} s"

def grow(megabytes):
    chunks = []
    try:
        for _ in range(megabytes // 64):
            chunks.append(bytearray(64 << 20))
        return f"exposed: grew to {len(chunks) * 64} MB"
    except MemoryError:
        return f"blocked: MemoryError at {len(chunks) * 64} MB"

def big_file(megabytes):
    try:
        with open("big.bin", "wb") as handle:
            for _ in range(megabytes):
                handle.write(b"\0" * (1 << 20))
        return f"exposed: wrote {megabytes} MB"
    except OSError as exc:
        return f"blocked: {errno.errorcode.get(exc.errno, exc.errno)}"

def escape(marker):
    # Leave the process group and the run's token behind: a detached sleeper with a clean environment.
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execve("/bin/sh", ["/bin/sh", "-c", f"sleep 30; echo {marker}"], {"PATH": "/usr/bin:/bin"})
        os._exit(0)
    time.sleep(0.5)
    return "spawned"

def interfaces():
    names = sorted(n for _, n in socket.if_nameindex())
    return "blocked: only lo" if names == ["lo"] else f"exposed: {names}"

def evaluate(program_path):
    case = json.load(open(program_path))
    result = globals()[case["name"]](*case.get("args", []))
    return {"score": 1.0, "metrics": {"result": result}}
'''


@pytest.fixture(scope="module")
def world():
    """A world-traversable base (pytest's tmp dirs are 0700): the evaluator's folder, a stand-in
    for the experiment's storage, a root-only secret file beside them, a fake venv site-packages."""
    base = Path(tempfile.mkdtemp(prefix="evolveflow-hostile-"))
    base.chmod(0o755)
    exp = base / "exp"
    exp.mkdir()
    (exp / "evaluator.py").write_text(HOSTILE)
    storage = base / "runs" / "exp"
    storage.mkdir(parents=True)
    (storage / "tree.duckdb").write_bytes(b"DUCK")
    site = base / "venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    secret = base / "root-only.txt"
    secret.write_text("top secret\n")
    secret.chmod(0o600)
    old = os.environ.get("EVOLVEFLOW_HOSTILE_SECRET")
    os.environ["EVOLVEFLOW_HOSTILE_SECRET"] = SECRET  # what a search holds: an API key
    yield {"base": base, "exp": exp, "storage": storage, "site": site, "secret": secret}
    if old is None:
        os.environ.pop("EVOLVEFLOW_HOSTILE_SECRET", None)
    shutil.rmtree(base, ignore_errors=True)


def spec_for(level: str, world: dict, **limits) -> EvaluatorSpec:
    return EvaluatorSpec(
        path=world["exp"] / "evaluator.py", sandbox="bwrap" if level == "bwrap" else "process",
        python=SYSTEM_PYTHON if level == "process-user" else None,
        separate_user=level != "process", hidden_paths=(world["storage"],), timeout_s=60, **limits)


def attack(level: str, world: dict, name: str, *args, **limits) -> str:
    spec = spec_for(level, world, **limits)
    isolation = isolation_for(spec)
    assert isolation.separate_user == (level == "process-user" or (level == "bwrap" and ROOT)), isolation
    result = run_evaluation(json.dumps({"name": name, "args": list(args)}), spec)
    assert result.outcome is Outcome.OK, (result.error, result.stderr_tail)
    return result.metrics["result"]


ATTACK_FROM_A_SEARCH = """
import json, sys
from pathlib import Path
from evolveflow.evaluation import EvaluatorSpec, make_undumpable, run_evaluation
make_undumpable()  # as flows/search.py does
spec = EvaluatorSpec.model_validate_json(sys.argv[1])
print(run_evaluation(sys.argv[2], spec).metrics.get("result"))
"""


@pytest.mark.parametrize("level", LEVELS)
def test_the_searchs_secrets_in_proc_environ(level, world):
    # A search holds API keys in its environment from the start: run the evaluation from a
    # process that was started with one (os.environ changes never reach /proc/PID/environ).
    spec = spec_for(level, world)
    case = json.dumps({"name": "ancestors_environ", "args": [SECRET]})
    done = subprocess.run([sys.executable, "-c", ATTACK_FROM_A_SEARCH, spec.model_dump_json(), case],
                          env={**os.environ, "OPENAI_API_KEY": SECRET}, capture_output=True, text=True, timeout=120)
    outcome = done.stdout.strip()
    # Same uid: root reads any process's environment; a non-root search is non-dumpable.
    exposed = level == "process" and ROOT
    assert outcome.startswith("exposed" if exposed else "blocked"), (outcome, done.stderr[-2000:])


@pytest.mark.parametrize("level", LEVELS)
def test_writing_a_pth_file_into_the_venv(level, world):
    target = world["site"] / "evil.pth"
    outcome = attack(level, world, "write", str(target))
    try:
        assert outcome.startswith("blocked" if level != "process" else "exposed"), outcome
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.parametrize("level", LEVELS)
def test_appending_to_the_experiments_tree(level, world):
    tree = world["storage"] / "tree.duckdb"
    outcome = attack(level, world, "write", str(tree))
    untouched = tree.read_bytes() == b"DUCK"
    tree.write_bytes(b"DUCK")
    assert outcome.startswith("blocked" if level != "process" else "exposed"), outcome
    assert untouched == (level != "process")


@pytest.mark.parametrize("level", LEVELS)
def test_reading_a_root_only_file_outside_the_experiment(level, world):
    outcome = attack(level, world, "read", str(world["secret"]))
    # Same uid: readable as root or as its non-root owner.
    assert outcome.startswith("blocked" if level != "process" else "exposed"), outcome


@pytest.mark.parametrize("level", LEVELS)
def test_connecting_to_a_server_on_the_hosts_loopback(level, world):
    from tests.test_evaluation_runner import _network_namespaces_work

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        outcome = attack(level, world, "connect", server.getsockname()[1])
    isolated = level == "bwrap" or _network_namespaces_work()
    assert outcome.startswith("blocked" if isolated else "exposed"), outcome
    assert attack(level, world, "interfaces").startswith("blocked" if isolated else "exposed")


@pytest.mark.parametrize("level", LEVELS)
def test_a_fork_bomb_is_capped_by_max_processes_for_an_unprivileged_uid(level, world):
    outcome = attack(level, world, "fork_bomb", 300, max_processes=40)
    capped = level == "process-user" or (level == "bwrap" and ROOT) or not ROOT
    assert outcome.startswith("blocked" if capped else "exposed"), outcome


@pytest.mark.parametrize("level", LEVELS)
def test_memory_fails_fast_at_the_limit(level, world):
    assert attack(level, world, "allocate", 50, memory_mb=512).startswith("blocked: MemoryError")
    grown = attack(level, world, "grow", 4096, memory_mb=512)
    assert grown.startswith("blocked: MemoryError at") and int(grown.split()[-2]) <= 512, grown


@pytest.mark.parametrize("level", LEVELS)
def test_a_file_larger_than_max_file_mb_cannot_be_written(level, world):
    assert attack(level, world, "big_file", 64, max_file_mb=16) == "blocked: EFBIG"


def test_the_start_line_names_the_level_and_what_it_does_not_protect(world):
    line = isolation_for(spec_for("process", world)).describe()
    assert line.startswith("sandbox: process level") and "NOT protected" in line
    assert "writes anywhere this user can write" in line


def test_cleanup_never_changes_the_mode_of_what_a_symlink_points_to(tmp_path):
    from evolveflow.evaluation.runner import make_writable_and_retry

    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o600)
    workdir = tmp_path / "work"
    (workdir / "locked").mkdir(parents=True)
    link = workdir / "locked" / "link"
    link.symlink_to(outside)
    make_writable_and_retry(os.unlink, str(link), None)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600 and not link.exists() and outside.exists()


def test_hidden_paths_config_and_defaults(tmp_path, monkeypatch):
    from evolveflow.evaluator_spec import evaluator_spec
    from evolveflow.experiment import load_experiment
    from evolveflow.scaffold import scaffold_experiment

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    exp_dir = scaffold_experiment("demo", tmp_path / "experiments")
    (exp_dir / "config.yaml").write_text("evaluation:\n  evaluator: evaluator.py\n"
                                         "  hidden_paths: [data/private, ~/.my-tokens, /opt/keys]\n")
    spec = evaluator_spec(load_experiment("demo", tmp_path))
    hidden = set(spec.hidden_paths)
    assert {exp_dir / "data" / "private", Path.home() / ".my-tokens", Path("/opt/keys")} <= hidden
    assert {tmp_path / "prefect-home", Path.home() / ".aws", Path.home() / ".ssh", Path("/etc/shadow"),
            load_experiment("demo", tmp_path).storage_dir} <= hidden
    (exp_dir / "config.yaml").write_text("evaluation:\n  evaluator: evaluator.py\n  hide_defaults: false\n"
                                         "  readable_paths: [data, /srv/datasets]\n")
    spec = evaluator_spec(load_experiment("demo", tmp_path))
    assert spec.hidden_paths == () and spec.readable_paths == ((exp_dir / "data").resolve(), Path("/srv/datasets"))


@pytest.mark.skipif(bwrap_problem() is not None, reason="needs bwrap")
def _visible_under_bwrap() -> Path | None:
    """A writable folder that bwrap does not mask anyway (not under /tmp, /run, /var/tmp or home)."""
    masked = [Path("/tmp"), Path("/run"), Path("/var/tmp"), Path.home()]
    for folder in (Path(__file__).resolve().parent, Path("/var/cache"), Path("/opt"), Path("/srv")):
        if folder.is_dir() and os.access(folder, os.W_OK) and not any(
                folder == m or m in folder.parents for m in masked):
            return folder
    return None


def test_a_configured_hidden_path_is_unreadable_under_bwrap(world):
    base = _visible_under_bwrap()
    if base is None:
        pytest.skip("no writable folder outside bwrap's default masks")
    secret_dir = Path(tempfile.mkdtemp(prefix=".evolveflow-hidden-test-", dir=base))
    try:
        secret_dir.chmod(0o755)
        (secret_dir / "token").write_text("tok")
        (secret_dir / "token").chmod(0o644)  # world-readable: only hiding protects it
        case = json.dumps({"name": "read", "args": [str(secret_dir / "token")]})
        shown = run_evaluation(case, spec_for("bwrap", world))
        assert shown.metrics["result"] == "exposed: tok"
        spec = spec_for("bwrap", world).model_copy(update={"hidden_paths": (world["storage"], secret_dir)})
        assert run_evaluation(case, spec).metrics["result"].startswith("blocked"), spec
    finally:
        shutil.rmtree(secret_dir)


@pytest.mark.parametrize("level", LEVELS)
def test_a_detached_process_with_a_scrubbed_environment_is_killed_and_voids_the_result(level, world):
    import uuid

    marker = f"escaped-{uuid.uuid4().hex}"
    spec = spec_for(level, world)
    result = run_evaluation(json.dumps({"name": "escape", "args": [marker]}), spec)
    survivors = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, marker)]
    for pid in survivors:
        os.kill(int(pid), 9)
    if level == "process":  # the same uid as the search: the known gap (docs/sandbox.md)
        assert survivors, "expected the documented escape at the same uid"
    else:
        assert survivors == [], "a detached process outlived the evaluation"
        assert result.outcome is Outcome.CANDIDATE_ERROR and "still running" in result.error, result.error


def _cmdline_has(pid: str, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.skipif(bwrap_problem() is not None or not ROOT, reason="needs bwrap and root (the home is masked)")
def test_readable_paths_bring_back_data_under_the_masked_home(world):
    data = Path(tempfile.mkdtemp(prefix=".evolveflow-data-test-", dir=Path.home()))
    try:
        data.chmod(0o755)
        (data / "table.csv").write_text("a,b")
        (data / "table.csv").chmod(0o644)
        case = json.dumps({"name": "read", "args": [str(data / "table.csv")]})
        assert run_evaluation(case, spec_for("bwrap", world)).metrics["result"].startswith("blocked")
        spec = spec_for("bwrap", world).model_copy(update={"readable_paths": (data,)})
        assert run_evaluation(case, spec).metrics["result"] == "exposed: a,b"
    finally:
        shutil.rmtree(data)
