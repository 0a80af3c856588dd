"""ASI-Evolve's command line on evolveflow: `python main.py --experiment X --steps N ...` runs `evolveflow run`.

--experiment X --steps N --sample-n K --eval-script P --config F become
`evolveflow run X --rounds N --sample-n K --eval-script P --config F`; any other flag of
`evolveflow run` (--model, --seed, --workers, --algorithm) is passed through as it is.
"""
import sys

_NEEDED = ("pydantic", "yaml", "prefect", "duckdb", "lancedb", "litellm")
_SETUP_HINT = ("evolveflow: error: this Python ({}) cannot run evolveflow ({}): use .venv/bin/python main.py ..., "
               "or run ./scripts/setup.sh first to create .venv")


def _missing_requirement():
    """Returns what this interpreter lacks to run evolveflow, or None."""
    if sys.version_info < (3, 10):
        return "Python 3.10 or newer is needed"
    import importlib.util

    missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
    return "missing " + ", ".join(missing) if missing else None


def evolveflow_argv(argv):
    """Returns the `evolveflow` arguments for ASI-Evolve's main.py arguments."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="main.py", description="Run an experiment as ASI-Evolve's main.py would, with evolveflow.",
        epilog="Other flags of `evolveflow run` (--model, --seed, --workers, --algorithm) are passed through.")
    parser.add_argument("--experiment", required=True, help="name under experiments/ or a path to an experiment folder")
    parser.add_argument("--steps", type=int, default=10, help="rounds to run in this invocation (default 10)")
    parser.add_argument("--sample-n", type=int, help="pipeline.sample_n (default: the config's)")
    parser.add_argument("--eval-script", help="evaluation.script: the experiment's evaluator script")
    parser.add_argument("--config", help="a YAML file merged after the experiment's config")
    args, rest = parser.parse_known_args(argv)
    out = ["run", args.experiment, "--rounds", str(args.steps)]
    for flag, value in (("--sample-n", args.sample_n), ("--eval-script", args.eval_script),
                        ("--config", args.config)):
        if value is not None:
            out += [flag, str(value)]
    return out + rest


def main(argv=None):
    """Checks the interpreter, maps the arguments and runs evolveflow's command line."""
    problem = _missing_requirement()
    if problem:
        print(_SETUP_HINT.format(sys.executable, problem), file=sys.stderr)
        return 2
    arguments = evolveflow_argv(sys.argv[1:] if argv is None else argv)
    from evolveflow.cli import main as evolveflow_main

    return evolveflow_main(arguments)


if __name__ == "__main__":
    sys.exit(main())
