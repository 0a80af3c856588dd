"""Prefect flows: a search is a flow; each round is a subflow of six tasks."""
from evolveflow import temporary_server

# Before any flow runs: with no PREFECT_API_URL, Prefect's temporary server starts in a session of
# its own and tells clients to retry a locked SQLite write in 0.2 s (evolveflow/temporary_server.py).
temporary_server.install()
