"""Prefect tasks: thin, retryable wrappers around the plain functions of each stage."""
