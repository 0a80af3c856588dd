"""evolveflow's stand-in for shinka.core: run_shinka_eval."""
from shinka.core.wrap_eval import run_shinka_eval, save_json_results

__all__ = ["run_shinka_eval", "save_json_results"]
