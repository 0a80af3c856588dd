"""evolveflow's stand-in for the `shinka` package: only what evaluate.py scripts import."""
