"""evolveflow: LLM-driven evolutionary program search on Prefect, DuckDB and LanceDB."""
from evolveflow.quiet import apply_offline_defaults

apply_offline_defaults()

__version__ = "0.1.0"
