"""The experiment tree's DuckDB schema, in one place."""

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR
);
CREATE TABLE IF NOT EXISTS nodes (
    id BIGINT PRIMARY KEY,
    parent_id BIGINT,
    round INTEGER NOT NULL,
    code VARCHAR NOT NULL,
    code_hash VARCHAR NOT NULL,
    motivation VARCHAR,
    edit VARCHAR,
    score DOUBLE,
    score_spread DOUBLE,
    metrics JSON,
    status VARCHAR NOT NULL,
    error VARCHAR,
    analysis VARCHAR,
    notes VARCHAR,
    feedback JSON,
    private_metrics JSON,
    island INTEGER NOT NULL DEFAULT 0,
    visits INTEGER NOT NULL DEFAULT 0,
    timings JSON,
    model VARCHAR,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd DOUBLE,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE INDEX IF NOT EXISTS nodes_hash ON nodes(code_hash);
CREATE TABLE IF NOT EXISTS attempts (
    node_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome VARCHAR NOT NULL,
    score DOUBLE,
    metrics JSON,
    error VARCHAR,
    exit_code INTEGER,
    duration_s DOUBLE,
    stdout_tail VARCHAR,
    stderr_tail VARCHAR,
    feedback JSON,
    private_metrics JSON,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (node_id, attempt)
);
CREATE TABLE IF NOT EXISTS llm_calls (
    node_id BIGINT,
    purpose VARCHAR NOT NULL,
    model VARCHAR,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd DOUBLE,
    latency_s DOUBLE,
    error VARCHAR,
    first_attempt INTEGER,  -- the write that recorded the call: 1 for a round, later for a re-evaluation
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    started_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    ended_at TIMESTAMP,
    rounds_asked INTEGER,
    rounds_done INTEGER DEFAULT 0,
    stop_reason VARCHAR,
    pid INTEGER
);
"""

# Trees written before these columns existed get them on open (DuckDB: ADD COLUMN IF NOT EXISTS).
MIGRATIONS = """
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS feedback JSON;
ALTER TABLE nodes ADD COLUMN IF NOT EXISTS private_metrics JSON;
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS feedback JSON;
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS private_metrics JSON;
ALTER TABLE llm_calls ADD COLUMN IF NOT EXISTS first_attempt INTEGER;
"""

# The node columns in table order, shared by reads and writes.
NODE_COLUMNS = (
    "id", "parent_id", "round", "code", "code_hash", "motivation", "edit", "score", "score_spread",
    "metrics", "status", "error", "analysis", "notes", "feedback", "private_metrics", "island", "visits", "timings", "model",
    "prompt_tokens", "completion_tokens", "cost_usd",
)
SUMMARY_COLUMNS = ("id", "parent_id", "round", "score", "status", "visits", "island", "metrics")

LINEAGE_SQL = """
WITH RECURSIVE lineage(id, parent_id, depth) AS (
    SELECT id, parent_id, 0 FROM nodes WHERE id = ?
    UNION ALL
    SELECT n.id, n.parent_id, l.depth + 1 FROM nodes n JOIN lineage l ON n.id = l.parent_id
)
SELECT id FROM lineage ORDER BY depth DESC
"""
