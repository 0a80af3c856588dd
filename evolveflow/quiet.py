"""Environment defaults that keep Prefect, litellm and LanceDB quiet and offline."""
import os

# setdefault everywhere: a user who sets any of these keeps their value.
OFFLINE_DEFAULTS = {
    # litellm fetches its price list from the network at import unless told not to.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    # Prefect's server looks up its telemetry host (and logs an ERROR offline) without these.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # The ephemeral server needs 13-26 s to start cold on a 2-core machine; 20 s is the default.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Without batching the server records task runs one per transaction and lags behind bursts.
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "200",
    "LANCEDB_LOG": "error",
    # onnxruntime (the offline embedding model) sends 1DS telemetry to a Microsoft host from a
    # background thread; disable_telemetry_events() did not stop it here, this variable does.
    "ORT_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# With a real Prefect server (PREFECT_API_URL set: the user's `prefect server`, or a worker running a
# deployment) each round's log line must reach the UI, while the console stays as quiet as before.
WITH_A_SERVER = {
    "PREFECT_LOGGING_TO_API_ENABLED": "true",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
}


# Without one, Prefect's temporary server runs with CSRF protection off (its default), so the
# client's CSRF token fetch is one wasted API call per round (every subflow opens a new client).
WITHOUT_A_SERVER = {
    "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false",
}


def apply_offline_defaults() -> None:
    """Set quiet, offline defaults for the stack unless the user already chose a value."""
    for key, value in (WITH_A_SERVER if os.environ.get("PREFECT_API_URL") else WITHOUT_A_SERVER).items():
        os.environ.setdefault(key, value)
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)
