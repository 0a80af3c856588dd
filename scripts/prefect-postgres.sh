#!/usr/bin/env bash
# A PostgreSQL-backed Prefect server on this machine, for searches with many workers.
#
#   scripts/prefect-postgres.sh [--dir DIR] [--port N] [--pg-port N]   start (foreground; Ctrl-C stops)
#   scripts/prefect-postgres.sh [--dir DIR] --stop                     stop the one started from DIR
#
# The first start creates a private PostgreSQL cluster in DIR (default .prefect-postgres/ in the
# repository): initdb, listening on 127.0.0.1 only, a `prefect` role and database, its generated
# password in DIR/prefect.password (mode 600). Later starts reuse the cluster (and its port, unless
# --pg-port says otherwise). Then it runs `prefect server start` on 127.0.0.1:N (default 4200, or a
# free port when 4200 is taken) with PREFECT_API_DATABASE_CONNECTION_URL pointing at that database,
# prints the PREFECT_API_URL to export, and stops both cleanly on Ctrl-C or SIGTERM.
# Why: the default SQLite-backed server answers "database is locked" (HTTP 503, retried by the
# client with doubling back-off) once several rounds are in flight; see README, "Many workers".
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIR="$REPO/.prefect-postgres"
PREFECT_PORT=""
PG_PORT=""
STOP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --port) PREFECT_PORT="$2"; shift 2 ;;
    --pg-port) PG_PORT="$2"; shift 2 ;;
    --stop) STOP=1; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prefect-postgres: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
PGDATA="$DIR/pgdata"
SOCKDIR="$DIR/run"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` system user
# (created by Debian's package), otherwise to the caller.
if [ "$(id -u)" = 0 ]; then DBUSER=postgres; else DBUSER="$(id -un)"; fi
as_db() { if [ "$(id -u)" = 0 ]; then runuser -u "$DBUSER" -- "$@"; else "$@"; fi; }

find_pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
}

pg_stop() {
  [ -n "${PGBIN:-}" ] || PGBIN="$(find_pg_bin)"
  if [ -f "$PGDATA/postmaster.pid" ] && as_db "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_db "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null && echo "prefect-postgres: PostgreSQL stopped"
  fi
}

if [ "$STOP" = 1 ]; then
  # The foreground script stops its Prefect server and PostgreSQL on SIGTERM; if it is gone
  # (killed hard), stop what it left.
  if alive "$DIR/script.pid"; then
    pid="$(cat "$DIR/script.pid")"; kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if alive "$DIR/prefect.pid"; then
    kill -TERM -- "-$(cat "$DIR/prefect.pid")" 2>/dev/null || true
    for _ in $(seq 1 150); do alive "$DIR/prefect.pid" || break; sleep 0.1; done
  fi
  rm -f "$DIR/prefect.pid" "$DIR/script.pid" "$DIR/prefect.url"
  pg_stop
  exit 0
fi

if alive "$DIR/script.pid"; then
  echo "prefect-postgres: already running from $DIR (pid $(cat "$DIR/script.pid")); stop it with: $0 --dir $DIR --stop" >&2
  [ -f "$DIR/prefect.url" ] && echo "export PREFECT_API_URL=$(cat "$DIR/prefect.url")"
  exit 0
fi

PGBIN="$(find_pg_bin)"
if [ -z "$PGBIN" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "prefect-postgres: installing Debian's postgresql (apt-get)" >&2
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    PGBIN="$(find_pg_bin)"
  fi
  [ -n "$PGBIN" ] || { echo "prefect-postgres: PostgreSQL's initdb not found; install it (Debian: apt-get install postgresql)" >&2; exit 1; }
fi

PREFECT="$REPO/.venv/bin/prefect"
[ -x "$PREFECT" ] || PREFECT="$(command -v prefect || true)"
[ -n "$PREFECT" ] || { echo "prefect-postgres: no prefect executable (run scripts/setup.sh first)" >&2; exit 1; }
PYTHON="$(dirname "$PREFECT")/python"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
"$PYTHON" -c "import asyncpg" 2>/dev/null || { echo "prefect-postgres: asyncpg is missing from $PYTHON (pip install asyncpg)" >&2; exit 1; }

free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_free() { "$PYTHON" -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }

# ---- the cluster ---------------------------------------------------------------------------
umask 077
if [ ! -f "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown "$DBUSER" "$PGDATA" && chmod 700 "$PGDATA"
  as_db test -w "$PGDATA" || { echo "prefect-postgres: user $DBUSER cannot write $PGDATA (a parent directory is not searchable?); use --dir" >&2; exit 1; }
  as_db "$PGBIN/initdb" -D "$PGDATA" -U "$DBUSER" --auth-local=peer --auth-host=scram-sha-256 -E UTF8 >"$DIR/initdb.log" 2>&1 \
    || { echo "prefect-postgres: initdb failed:" >&2; tail -n 20 "$DIR/initdb.log" >&2; exit 1; }
fi
if [ ! -s "$DIR/prefect.password" ]; then
  LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 >"$DIR/prefect.password" || true
fi
PASSWORD="$(cat "$DIR/prefect.password")"
[ -n "$PG_PORT" ] || PG_PORT="$(cat "$DIR/pg.port" 2>/dev/null || true)"
if [ -z "$PG_PORT" ] || { ! as_db "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1 && ! port_free "$PG_PORT"; }; then
  PG_PORT="$(free_port)"
fi
echo "$PG_PORT" >"$DIR/pg.port"
mkdir -p "$SOCKDIR" && chown "$DBUSER" "$SOCKDIR" && chmod 700 "$SOCKDIR"

PG_STARTED=0
if ! as_db "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  touch "$DIR/postgres.log" && chown "$DBUSER" "$DIR/postgres.log"
  as_db "$PGBIN/pg_ctl" -D "$PGDATA" -l "$DIR/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $SOCKDIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null \
    || { echo "prefect-postgres: PostgreSQL did not start:" >&2; tail -n 20 "$DIR/postgres.log" >&2; exit 1; }
  PG_STARTED=1
else
  PG_PORT="$(sed -n 4p "$PGDATA/postmaster.pid")"  # the running one's port
  echo "$PG_PORT" >"$DIR/pg.port"
fi
psql_admin() { as_db "$PGBIN/psql" -h "$SOCKDIR" -p "$PG_PORT" -U "$DBUSER" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'prefect'")" != 1 ]; then
  psql_admin -c "CREATE ROLE prefect LOGIN PASSWORD '$PASSWORD'"
else
  psql_admin -c "ALTER ROLE prefect PASSWORD '$PASSWORD'"  # the file is the truth
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'prefect'")" != 1 ]; then
  psql_admin -c "CREATE DATABASE prefect OWNER prefect"
fi

# ---- the Prefect server --------------------------------------------------------------------
if [ -z "$PREFECT_PORT" ]; then
  if port_free 4200; then PREFECT_PORT=4200; else PREFECT_PORT="$(free_port)"; fi
fi
URL="http://127.0.0.1:$PREFECT_PORT/api"
PREFECT_PID=""
cleanup() {
  trap - INT TERM EXIT
  if [ -n "$PREFECT_PID" ] && kill -0 "$PREFECT_PID" 2>/dev/null; then
    kill -TERM -- "-$PREFECT_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$PREFECT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$PREFECT_PID" 2>/dev/null || true
    echo "prefect-postgres: Prefect server stopped"
  fi
  pg_stop
  rm -f "$DIR/prefect.pid" "$DIR/script.pid" "$DIR/prefect.url"
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT
echo $$ >"$DIR/script.pid"

mkdir -p "$DIR/home"
# Its own PREFECT_HOME: a profile's PREFECT_API_URL must not point the server elsewhere.
# PREFECT_API_URL in the server's environment makes the UI call this port, not 4200.
# The batch sizes are the ones evolveflow gives its embedded server (evolveflow/quiet.py).
env PREFECT_HOME="$DIR/home" PREFECT_API_URL="$URL" PREFECT_UI_API_URL="$URL" \
  PREFECT_API_DATABASE_CONNECTION_URL="postgresql+asyncpg://prefect:$PASSWORD@127.0.0.1:$PG_PORT/prefect" \
  PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 \
  PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE="${PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE:-200}" \
  PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE="${PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE:-200}" \
  setsid "$PREFECT" server start --host 127.0.0.1 --port "$PREFECT_PORT" >>"$DIR/prefect.log" 2>&1 &
PREFECT_PID=$!
echo "$PREFECT_PID" >"$DIR/prefect.pid"
echo "prefect-postgres: PostgreSQL on 127.0.0.1:$PG_PORT ($DIR), Prefect server starting on port $PREFECT_PORT (log: $DIR/prefect.log)"
for _ in $(seq 1 240); do
  kill -0 "$PREFECT_PID" 2>/dev/null || { echo "prefect-postgres: the Prefect server exited:" >&2; tail -n 30 "$DIR/prefect.log" >&2; exit 1; }
  if "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=2)' "$URL" 2>/dev/null; then
    echo "$URL" >"$DIR/prefect.url"
    echo "prefect-postgres: ready. In another shell:"
    echo "export PREFECT_API_URL=$URL"
    break
  fi
  sleep 0.5
done
[ -f "$DIR/prefect.url" ] || { echo "prefect-postgres: the Prefect server was not healthy within 120 s" >&2; exit 1; }
wait "$PREFECT_PID" || true
