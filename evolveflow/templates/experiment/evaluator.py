"""Score a candidate's approximate(x) against sin(x) on [0, pi]: -mean squared error.

The candidate runs in a child process that hands back only its numbers (its prints go to stderr);
this process checks and scores them. A candidate can therefore not forge its score by printing,
writing result files or exiting early. Keep this pattern when you adapt the file.
"""
import json
import math
import os
import subprocess
import sys

XS = [math.pi * i / 199 for i in range(200)]

# Runs in the child: import the candidate, call approximate(x) for every x, send the values over a pipe.
CHILD = r"""
import importlib.util, json, os, sys
fd, xs = int(sys.argv[2]), json.loads(sys.argv[3])
try:
    spec = importlib.util.spec_from_file_location("candidate", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    payload = {"values": [module.approximate(x) for x in xs]}
except BaseException as exc:
    payload = {"error": f"{type(exc).__name__}: {exc}"}
os.write(fd, json.dumps(payload, default=repr).encode())
os._exit(0)
"""


def candidate_values(program_path):
    """Run the candidate in a child process and return its approximate(x) values."""
    read_end, write_end = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", CHILD, program_path, str(write_end), json.dumps(XS)],
                             pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=2, stderr=2)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as data:
        raw = data.read()
    child.wait()
    if not raw:
        raise RuntimeError("the candidate's process ended before it returned its values")
    payload = json.loads(raw)
    if "error" in payload:
        raise RuntimeError(payload["error"])
    return payload["values"]


def evaluate(program_path):
    errors = []
    for x, y in zip(XS, candidate_values(program_path)):
        if isinstance(y, bool) or not isinstance(y, (int, float)) or not math.isfinite(y):
            raise ValueError(f"approximate({x:.4f}) returned {y!r}, not a finite number")
        errors.append((y - math.sin(x)) ** 2)
    mse = sum(errors) / len(errors)
    return {"score": -mse, "metrics": {"mse": mse, "max_error": math.sqrt(max(errors))}}


if __name__ == "__main__":
    print(json.dumps(evaluate(sys.argv[1])))
