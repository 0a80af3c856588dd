"""Serve the search as a scheduled deployment without a work pool or worker (one process)."""
from __future__ import annotations

import argparse

import evolveflow  # noqa: F401  (quiet, offline defaults before Prefect loads)
from flows.search import evolve_search


def main() -> None:
    """Serves evolve-search for one experiment on a cron schedule until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--cron", default="0 18 * * *")
    args = parser.parse_args()
    evolve_search.serve(
        name=f"{args.experiment}-scheduled", cron=args.cron,
        parameters={"experiment": args.experiment, "rounds": args.rounds},
    )


if __name__ == "__main__":
    main()
