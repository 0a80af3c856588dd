"""Launch an evaluator in a killable process tree, under bubblewrap or as a plain process, with limits.

Two levels (see docs/sandbox.md for what each was measured to stop):

* ``bwrap``: bubblewrap with the whole filesystem read-only, only the working directory writable,
  fresh /tmp, /run and /var/tmp, new pid/net/ipc/uts/user namespaces, no capabilities, no nested
  user namespaces, and death with its parent. Killing bwrap kills every process inside.
* ``process``: a plain subprocess in its own session. It does NOT prevent writes outside the
  working directory nor network access; it only scrubs the environment, applies rlimits and kills
  the whole tree (process group plus every process carrying this run's token in its environment).

Both levels run the command through a tiny launcher that sets RLIMIT_AS / RLIMIT_CORE
(and RLIMIT_NPROC for non-root users: the kernel ignores it for root), arms SIGKILL on the
death of evolveflow, and refuses to start if evolveflow has already died; it then runs the
command as its child, waits for it, and reports how many of the run's other processes outlived
it (Completed.leftovers) over a pipe the command never holds.
What a SIGKILLed evolveflow leaves behind is removed by sweep_orphans() (run once per process).
"""
from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from evolveflow.abort import Aborted

TOKEN_VARIABLE = "EVOLVEFLOW_RUN_TOKEN"
# Directories replaced by an empty tmpfs under bwrap: a read-only bind still lets a program
# connect() to the unix sockets inside them (measured), e.g. a database's or docker's.
MASKED_BY_DEFAULT = (Path("/tmp"), Path("/run"), Path("/var/tmp"))
_READ_CHUNK = 65536
_POLL_S = 0.1
# After the evaluator exits, escaped processes may hold our pipes open; wait this long at most.
_DRAIN_GRACE_S = 1.0

# Runs just before the evaluator (and, under bwrap, also before bwrap): limits first, then exec,
# so no user code ever runs without them (preexec_fn is unsafe in a threaded parent such as a
# Prefect worker). "alive_fd" is the read end of a pipe whose write end only evolveflow holds:
# once evolveflow is dead it reports a hang-up, and the evaluator is not started. This closes the
# window in which a parent-death signal is not armed yet (bwrap arms its own without such a check).
_LAUNCHER = r"""
import json, os, resource, select, signal, sys
config = json.loads(sys.argv[1])
for name, value in config["rlimits"].items():
    limit = getattr(resource, name)
    hard = resource.getrlimit(limit)[1]
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(limit, (value, value))
def die_with_parent():
    import ctypes
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG = SIGKILL: die with the parent
if config["pdeathsig"]:
    die_with_parent()
watch = select.poll()
watch.register(config["alive_fd"], select.POLLIN)
if watch.poll(0):  # nothing is ever written: any event is the hang-up of a dead evolveflow
    os._exit(75)
if not config["keep_alive_fd"]:
    os.close(config["alive_fd"])
command = sys.argv[2:]
report_fd = config.get("report_fd")
launcher = os.getpid()
child = os.fork() if report_fd is not None else 0
def isolate_network():
    # A network namespace of its own with only loopback (up): no route out, no DNS, and not even
    # the host's 127.0.0.1 (the Prefect server, databases). Needs root, or user namespaces.
    import ctypes, fcntl, socket, struct
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000 | (0x10000000 if uid != 0 else 0)) != 0:  # CLONE_NEWNET (| NEWUSER)
        return
    if uid != 0:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40))  # SIOCSIFFLAGS UP|LOOPBACK|RUNNING
if child == 0:
    if report_fd is not None:
        os.close(report_fd)  # the evaluator and everything it starts never hold the report channel
        die_with_parent()
        if config.get("own_network"):
            try:
                isolate_network()
            except OSError as exc:
                sys.stderr.write(f"evolveflow: could not isolate the network: {exc}\n")
        if config.get("run_as"):  # root: the evaluator runs as an unprivileged user of its own
            uid, gid = config["run_as"]
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            die_with_parent()  # a change of user clears the parent-death signal: arm it again
        if os.getppid() != launcher:  # the launcher died before the signal was armed: do not start
            os._exit(75)
    try:
        os.execv(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"evolveflow: cannot execute evaluator {command[0]}: {exc}\n")
        os._exit(75)
for caught in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(caught, signal.SIG_IGN)  # the evaluator decides; evolveflow kills with SIGKILL
_, status = os.waitpid(child, 0)
me, token = os.getpid(), os.environ.get(config["token_variable"], "")
def _uid_of(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None
def belongs(pid):
    # In bwrap's pid namespace every process but its init (1) and us is the evaluation's;
    # at the process level, the ones carrying this run's token.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False  # exited already
        if config["own_pid_namespace"]:
            return pid != 1
        if config.get("run_as") and _uid_of(pid) == config["run_as"][0]:
            return True  # the evaluation's own uid: even a process that scrubbed its environment
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return f"{config['token_variable']}={token}".encode() in handle.read().split(b"\0")
    except (OSError, IndexError):
        return False
leftovers = [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != me and belongs(int(n))]
os.write(report_fd, f"{len(leftovers)}\n".encode())
os.close(report_fd)
if os.WIFSIGNALED(status):  # end the same way, so that evolveflow classifies the same signal
    try:
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL and SIGSTOP cannot be handled: their default is all they have
    os.kill(me, os.WTERMSIG(status))
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 70)
"""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one evaluator run."""

    timeout_s: float
    memory_mb: int | None
    max_output_bytes: int
    kill_output_bytes: int
    max_processes: int | None = None
    max_result_bytes: int = 0  # stdout may hold a result this large: its tail keeps at least this much
    max_file_mb: int | None = None  # RLIMIT_FSIZE


@dataclass(frozen=True)
class Completed:
    """What was observed of one evaluator run."""

    exit_code: int | None
    stdout: bytes  # the last max_output_bytes
    stderr: bytes
    stdout_bytes: int  # total printed
    stderr_bytes: int
    killed_reason: str | None  # set when evolveflow killed the run (timeout or output guard)
    duration_s: float
    channel: bytes | None = None  # what the harness sent over the private result pipe, if one was given
    # Processes of the evaluation still alive when the evaluator itself exited (None: the launcher
    # could not say, e.g. it was killed): they could have rewritten a result after the evaluator.
    leftovers: int | None = None


class _Tail:
    """Keeps the last `keep` bytes of a stream and counts all of them."""

    def __init__(self, name: str, keep: int) -> None:
        self.name, self.keep, self.total, self.data = name, keep, 0, bytearray()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk
        if len(self.data) > 2 * self.keep:  # trim rarely: amortised O(1) per byte
            del self.data[: len(self.data) - self.keep]

    def tail(self) -> bytes:
        return bytes(self.data[-self.keep:]) if self.keep else b""


_bwrap_lock = threading.Lock()
_bwrap_result: list[str | None] = []


def bwrap_problem() -> str | None:
    """Return None when bubblewrap works here with evolveflow's flags, else why not (probed once)."""
    with _bwrap_lock:
        if not _bwrap_result:
            _bwrap_result.append(_probe_bwrap())
        return _bwrap_result[0]


def _probe_bwrap() -> str | None:
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (install the 'bubblewrap' package)"
    with tempfile.TemporaryDirectory(prefix="evolveflow-probe-") as workdir:
        argv = bwrap_prefix(Path(workdir)) + ["true"]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap could not be started: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip() or f"exit status {done.returncode}"
        return f"bwrap does not work here ({reason}); user namespaces may be disabled"
    return None


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _maskable(path: Path) -> bool:
    # A symlink's target is masked on its own; bwrap cannot mount over a missing path.
    return path.exists() and not path.is_symlink()


def _mask_args(paths: Sequence[Path]) -> list[str]:
    argv: list[str] = []
    for path in paths:
        argv += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    return argv


def bwrap_prefix(workdir: Path, readable: Sequence[Path] = (), hidden: Sequence[Path] = (),
                 cwd: Path | None = None, frozen: Sequence[Path] = (), writable: Sequence[Path] = (),
                 separate_user: bool = False) -> list[str]:
    """Return the bwrap argv (ending in '--') that confines a command to a writable workdir.

    separate_user (bwrap started by root): no user namespace, every capability dropped but
    CAP_SETUID/CAP_SETGID, which the launcher inside uses to become an unprivileged uid before
    the command starts (so it cannot read root's files either); the home directory is then an
    empty tmpfs except the readable paths (an unprivileged uid could not traverse /root anyway).
    """
    argv = [shutil.which("bwrap") or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    home = Path.home()
    extra_masks = [home] if separate_user and home != Path("/") else []
    masked = [path for path in (*MASKED_BY_DEFAULT, *extra_masks) if _maskable(path)]
    argv += _mask_args(masked)
    for path in readable:  # things the evaluator needs that a default mask would otherwise hide
        roots = [root for root in masked if _under(path, root)]
        if path.exists() and roots:
            # bwrap would create the folders leading to it as 0700: another uid could not pass.
            between = [parent for parent in reversed(path.parents) if roots[0] in parent.parents]
            argv += [arg for parent in between for arg in ("--dir", str(parent))]
            argv += ["--ro-bind", str(path), str(path)]
    # The user's hidden paths come after the readable binds so that they win inside them.
    argv += _mask_args([path for path in hidden if _maskable(path)])
    argv += [
        "--bind", str(workdir), str(workdir),
        # Parts of the working directory the evaluator needs but must not change (e.g. the copy of
        # an ASI-Evolve experiment with its eval.sh), then the writable places inside those.
        *[arg for path in frozen for arg in ("--ro-bind", str(path), str(path))],
        *[arg for path in writable for arg in ("--bind", str(path), str(path))],
        "--chdir", str(cwd or workdir),
    ]
    if separate_user:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                 "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        # Run as root, bwrap keeps every capability by default, and the sandboxed root could then
        # remount / read-write (measured). Either flag below stops that alone (measured); keep both.
        argv += ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    return argv + ["--die-with-parent", "--new-session", "--"]


def launcher_prefix(rlimits: Mapping[str, int], *, alive_fd: int, pdeathsig: bool,
                    keep_alive_fd: bool = False, report_fd: int | None = None,
                    own_pid_namespace: bool = False, run_as: tuple[int, int] | None = None,
                    own_network: bool = False) -> list[str]:
    """Return the argv prefix that sets rlimits, arms SIGKILL-on-parent-death, checks evolveflow lives, execs.

    With report_fd, the launcher runs the command as its child instead, waits for it, writes to
    report_fd how many of the evaluation's other processes were still alive, and exits as the child did.
    That child first enters a network namespace of its own (own_network, where the kernel allows)
    and becomes run_as (uid, gid) when given (the launcher must be root).
    """
    config = json.dumps({"rlimits": dict(rlimits), "alive_fd": alive_fd, "pdeathsig": pdeathsig,
                         "keep_alive_fd": keep_alive_fd, "report_fd": report_fd,
                         "own_pid_namespace": own_pid_namespace, "token_variable": TOKEN_VARIABLE,
                         "run_as": list(run_as) if run_as else None, "own_network": own_network})
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, config]


def rlimits_for(limits: Limits) -> dict[str, int]:
    """Return the resource limits (name -> value) that confine the evaluator."""
    rlimits = {"RLIMIT_CORE": 0}
    if limits.max_file_mb is not None:  # a bigger file kills the writer (SIGXFSZ): a candidate_error
        rlimits["RLIMIT_FSIZE"] = limits.max_file_mb * 1024 * 1024
    if limits.memory_mb is not None:
        rlimits["RLIMIT_AS"] = limits.memory_mb * 1024 * 1024
    process_cap = _process_cap(limits.max_processes)
    if process_cap is not None:
        rlimits["RLIMIT_NPROC"] = process_cap
    return rlimits


def _process_cap(max_processes: int | None) -> int | None:
    # RLIMIT_NPROC counts every task of the user, so allow what already runs plus max_processes.
    # Root is exempt from RLIMIT_NPROC (measured, also inside bwrap), so it would be a no-op.
    if max_processes is None or os.geteuid() == 0:
        return None
    return _tasks_of_user(os.getuid()) + max_processes


_STATUS_FIELDS = ("State", "Uid", "Threads")


def _process_status() -> dict[int, dict[str, str]]:
    """Every process's State, Uid and Threads from /proc/PID/status (a process gone meanwhile is left out).

    Runs at least twice per evaluation: only the three fields are parsed (a third of the cost of
    splitting every line)."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = {}
        for key in _STATUS_FIELDS:
            at = status.find(f"\n{key}:")
            if at >= 0:
                end = status.find("\n", at + 1)
                fields[key] = status[at + len(key) + 2:end if end >= 0 else None]
        found[int(name)] = fields
    return found


def _uid(fields: dict[str, str]) -> int:
    return int(fields.get("Uid", "-1").split()[0])


def _tasks_of_user(uid: int) -> int:
    return sum(int(f.get("Threads", "1")) for f in _process_status().values() if _uid(f) == uid)


def _start_time(pid: int | str) -> str | None:
    # Field 22 of /proc/PID/stat; with the pid it names a process uniquely (pids get reused).
    # None for a process that is gone or a zombie: it will never clean up after itself.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def new_run_token() -> str:
    """Return a fresh token naming this evolveflow process (pid and start time) and the run."""
    return f"{os.getpid()}-{_start_time('self')}-{secrets.token_hex(8)}"


def _run_tokens() -> dict[int, str]:
    tokens, me, prefix = {}, os.getpid(), f"{TOKEN_VARIABLE}=".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue  # gone already, or not ours
        for entry in environ.split(b"\0"):
            if entry.startswith(prefix):
                tokens[int(name)] = entry[len(prefix):].decode("ascii", "replace")
    return tokens


def sweep_orphans() -> int:
    """SIGKILL evaluation processes whose evolveflow process has died; return how many were killed.

    A SIGKILLed evolveflow cannot clean up: at the process level the evaluator's own children
    outlive it, and a bwrap killed within its first milliseconds leaves a child blocked forever
    in its setup handshake (measured; no user code has run in it yet).
    """
    killed = 0
    for pid, token in _run_tokens().items():
        owner_pid, _, owner_start = token.partition("-")
        owner_start = owner_start.partition("-")[0]
        if owner_pid.isdigit() and _start_time(owner_pid) != owner_start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


_sweep_lock = threading.Lock()
_swept = False


def _sweep_orphans_once() -> None:
    global _swept
    with _sweep_lock:
        if not _swept:
            _swept = True
            sweep_orphans()


def _processes_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes whose real uid is uid."""
    return [pid for pid, f in _process_status().items()
            if _uid(f) == uid and not f.get("State", "").strip().startswith("Z")]


def kill_tree(proc: subprocess.Popen, token: str, uid: int | None = None, attempts: int = 200) -> bool:
    """SIGKILL the run's process group, every process carrying its token and, when the run has a
    uid of its own, every process of that uid (a detached one that scrubbed its environment too);
    True once none is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(attempts):
        # A zombie's environ reads empty, so dead-but-unreaped processes do not count.
        pids = [pid for pid, carried in _run_tokens().items() if carried == token]
        if uid is not None:
            pids += _processes_of_uid(uid)
        if not pids:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)
    return False


def run_sandboxed(
    command: Sequence[str],
    *,
    workdir: Path,
    env: Mapping[str, str],
    level: str,
    limits: Limits,
    readable: Sequence[Path] = (),
    hidden: Sequence[Path] = (),
    channel: tuple[int, int] | None = None,
    cwd: Path | None = None,
    frozen: Sequence[Path] = (),
    writable: Sequence[Path] = (),
    cancel: threading.Event | None = None,
    separate_user: bool = False,
    own_network: bool = False,
) -> Completed:
    """Run command at sandbox level 'bwrap' or 'process' in workdir; kill it all when done or over limits.

    channel: (read end, write end) of a pipe made by the caller; the write end is passed to the
    command (its number must be in the command line) and closed here; the read end is drained
    concurrently and closed, and what arrived is Completed.channel.
    frozen: folders inside workdir that are read-only under bwrap, except the `writable` ones inside them.
    cancel: once set, the whole process tree is killed within about 0.1 s and Aborted is raised
    (nothing is started when it is set already).
    separate_user (process level, evolveflow running as root): the command runs as a fresh
    unprivileged uid that owns the working directory (not its frozen parts) and nothing else.
    own_network (process level): a network namespace with only loopback, where the kernel allows.
    """
    if level not in ("bwrap", "process"):
        raise ValueError(f"sandbox level must be 'bwrap' or 'process', got {level!r}")
    _sweep_orphans_once()  # leftovers of an earlier evolveflow that was SIGKILLed
    if cancel is not None and cancel.is_set():
        raise Aborted("the search was aborted: the evaluator was not started")
    token = new_run_token()
    alive_fd, alive_keeper = os.pipe()
    report_read, report_fd = os.pipe()
    passed = (alive_fd, report_fd) + ((channel[1],) if channel else ())
    run_as = None
    rlimits = rlimits_for(limits)
    if separate_user and os.geteuid() == 0:
        run_as = new_sandbox_user()
        hand_over(workdir, run_as, frozen, writable)
        if limits.max_processes is not None:  # a fresh uid: the cap counts this evaluation alone
            rlimits["RLIMIT_NPROC"] = limits.max_processes
    inner = launcher_prefix(rlimits, alive_fd=alive_fd, pdeathsig=True, report_fd=report_fd,
                            own_pid_namespace=level == "bwrap", run_as=run_as,
                            own_network=own_network and level == "process") + list(command)
    if level == "bwrap":
        # bwrap itself is started with the parent-death signal armed, and passes alive_fd inside.
        outer = launcher_prefix({}, alive_fd=alive_fd, pdeathsig=True, keep_alive_fd=True)
        argv = outer + bwrap_prefix(workdir, readable, hidden, cwd=cwd, frozen=frozen, writable=writable,
                                    separate_user=run_as is not None) + inner
    else:
        argv = inner
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd or workdir, env={**env, TOKEN_VARIABLE: token}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            pass_fds=passed,
        )
    except OSError:
        os.close(alive_keeper)
        os.close(report_read)
        if channel:
            os.close(channel[0])
        raise
    finally:
        for fd in passed:
            os.close(fd)
    streams = {proc.stdout.fileno(): _Tail("stdout", max(limits.max_output_bytes, limits.max_result_bytes)),
               proc.stderr.fileno(): _Tail("stderr", limits.max_output_bytes)}
    streams[report_read] = _Tail("the launcher's report", 64)
    if channel:
        streams[channel[0]] = _Tail("the result channel", limits.kill_output_bytes)
    try:
        killed_reason = _supervise(proc, streams, limits, started, token, cancel, run_as[0] if run_as else None)
    finally:
        kill_tree(proc, token, run_as[0] if run_as else None)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        os.close(alive_keeper)
        os.close(report_read)
        if channel:
            os.close(channel[0])
    if killed_reason == _ABORTED:
        raise Aborted("the search was aborted: the evaluator's processes were killed")
    out, err, report, *result = streams.values()
    return Completed(
        exit_code=proc.returncode, stdout=out.tail(), stderr=err.tail(), stdout_bytes=out.total,
        stderr_bytes=err.total, killed_reason=killed_reason, duration_s=time.monotonic() - started,
        channel=result[0].tail() if result else None, leftovers=_leftovers(report.tail()),
    )


def make_undumpable() -> bool:
    """Makes this process non-dumpable: a process of the same user (a candidate at the process
    level) can then no longer read its /proc/PID/environ (API keys) or memory; only a process with
    CAP_SYS_PTRACE can. Returns False where prctl is unavailable."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE = 0
    except (OSError, AttributeError):
        return False


# Unprivileged users of the process level: far above the uids of real accounts and of the
# user-namespace ranges (/etc/subuid usually starts at 100000 with 65536 per user).
SANDBOX_UID_BASE = 1_500_000_000
SANDBOX_UID_COUNT = 100_000_000


def new_sandbox_user() -> tuple[int, int]:
    """Return a fresh (uid, gid) no account and no other evaluation uses (random in a wide range)."""
    uid = SANDBOX_UID_BASE + secrets.randbelow(SANDBOX_UID_COUNT)
    return uid, uid


def hand_over(workdir: Path, owner: tuple[int, int], frozen: Sequence[Path] = (),
              writable: Sequence[Path] = ()) -> None:
    """Make owner the owner of workdir and all in it, except the frozen folders (but the writable
    ones inside those); symlinks themselves are changed, never what they point to."""
    frozen_set = {Path(p) for p in frozen}

    def chown_tree(root: Path, skip: set[Path]) -> None:
        os.chown(root, *owner, follow_symlinks=False)
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
            for name in dirs + files:
                os.chown(os.path.join(folder, name), *owner, follow_symlinks=False)

    chown_tree(workdir, frozen_set)
    for path in writable:
        chown_tree(Path(path), set())
    os.chmod(workdir, 0o711)  # bwrap, root without capabilities, must still chdir into it


def _leftovers(report: bytes) -> int | None:
    """Return the launcher's count of processes alive when the evaluator exited (None: no report)."""
    try:
        return int(report.decode("ascii").strip())
    except ValueError:
        return None


_ABORTED = "aborted"


def _supervise(proc: subprocess.Popen, streams: dict[int, _Tail], limits: Limits,
               started: float, token: str, cancel: threading.Event | None = None,
               uid: int | None = None) -> str | None:
    """Pump both pipes until the run ends; enforce the wall clock, the output guard and cancel."""
    deadline = started + limits.timeout_s
    killed_reason: str | None = None
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                kill_tree(proc, token, uid)
                return _ABORTED
            if killed_reason is None and exited_at is None and now >= deadline:
                killed_reason = f"timed out after {float(limits.timeout_s)} s"
                kill_tree(proc, token, uid)
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                kill_tree(proc, token, uid)  # leftovers would hold the pipes open
            if not selector.get_map():
                if exited_at is not None:
                    return killed_reason
                try:  # the evaluator closed its pipes but still runs (look at cancel now and then)
                    proc.wait(timeout=min(_POLL_S, max(0.0, deadline - now)))
                except subprocess.TimeoutExpired:
                    pass
                continue
            if exited_at is not None and now - exited_at > _DRAIN_GRACE_S:
                return killed_reason
            wait_s = _POLL_S if killed_reason or exited_at else min(_POLL_S, max(0.0, deadline - now))
            for key, _ in selector.select(timeout=wait_s):
                chunk = os.read(key.fd, _READ_CHUNK)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                stream = streams[key.fd]
                stream.add(chunk)
                if killed_reason is None and stream.total > limits.kill_output_bytes:
                    killed_reason = (f"printed more than {limits.kill_output_bytes} bytes on "
                                     f"{stream.name} (output limit); killed")
                    kill_tree(proc, token, uid)
