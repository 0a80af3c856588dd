"""Prefect flows: a search is a flow; each round is a subflow of six tasks."""
