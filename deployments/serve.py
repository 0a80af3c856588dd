"""Serve the search as a scheduled deployment without a work pool or worker (one process)."""
from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

import evolveflow  # noqa: F401  (quiet, offline defaults before Prefect loads)


def server_problem() -> str | None:
    """Returns why serving cannot work here (no server to schedule on), or None."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return ("serving needs a running Prefect server (the temporary one cannot schedule): start one with "
                "`prefect server start --host 127.0.0.1 --port 4200` and export "
                "PREFECT_API_URL=http://127.0.0.1:4200/api")
    with get_client(sync_client=True) as client:
        error = client.api_healthcheck()
    if error is not None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
        return (f"no Prefect server answers at {url} ({type(error).__name__}): start it with "
                f"`prefect server start --host {host} --port {port}` or fix PREFECT_API_URL")
    return None


def experiment_problem(experiment: str) -> str | None:
    """Returns why the experiment cannot be searched (it does not exist, its config is broken), or None."""
    from evolveflow.experiment import load_experiment
    from evolveflow.user_errors import is_user_error

    try:
        load_experiment(experiment)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        return " ".join(str(exc).split())
    return None


def main() -> int:
    """Serves evolve-search for one experiment on a cron schedule until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--cron", default="0 18 * * *")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"argument --rounds: must be at least 1, got {args.rounds}")
    problem = experiment_problem(args.experiment) or server_problem()
    if problem:
        print(f"serve.py: error: {problem}", file=sys.stderr)
        return 2
    from flows.search import evolve_search

    evolve_search.serve(
        name=f"{args.experiment}-scheduled", cron=args.cron,
        parameters={"experiment": args.experiment, "rounds": args.rounds},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
