#!/usr/bin/env bash
# Load benchmark of a real `kassa serve` (API + in-process worker) with wrk.
#
#   bash bench/run.sh sqlite        # fresh data dir, SQLite (synchronous=FULL)
#   bash bench/run.sh postgres      # fresh database on 127.0.0.1:5432, dropped afterwards
#
# Knobs (environment):
#   BENCH_DURATION=10s              wrk -d
#   BENCH_CONNECTIONS=64            wrk -c
#   BENCH_THREADS="1 2"             wrk -t values to try, each scenario is run once per value
#   BENCH_SCENARIOS="query payment_get create_payment create_task refund transactions
#                    transactions_cursor"
#                                   (also: epay_mapi, cryptogw_create: the protocol facades'
#                                   order creation, each request signed beforehand)
#   BENCH_TASKS=<n>                 unused undispatched tasks to have before each create_payment
#                                   run (default 5000 x duration in seconds, more than this box
#                                   can take; the pool is topped up between runs)
#   BENCH_ORDERS=1000               orders the query scenario cycles over (payment_get: one
#                                   seed-004 Payment for each of them)
#   BENCH_REFUND_ORDERS=1000        paid orders (of the 5,000,000-cent per-transaction maximum,
#                                   all in escrow) the refund scenario cycles over, 1 cent per
#                                   request; a new pool is made before a run that could use up
#                                   one order's escrow at 5,000 refunds/s (more than this box
#                                   can take)
#   BENCH_REFUND_METHOD=original    refund_method of the refund scenario: original (processing
#                                   until the worker confirms it) or balance (completed at once)
#   BENCH_HISTORY=3000              transactions in the history of the merchant the
#                                   transactions scenarios read (a second enterprise account)
#   BENCH_PROFILE="create_payment"  scenarios to profile: py-spy records the server during
#                                   each of their runs (collapsed stacks in bench/results/,
#                                   summarised by bench/pyspy_summary.py into the results file)
#   BENCH_PYSPY_ARGS="--threads"    extra py-spy record flags, e.g. "--threads --gil" or
#                                   "--threads --native"
#   BENCH_PG_ANALYZE=0              1: ANALYZE the PostgreSQL database after the fixtures, as
#                                   autovacuum does on a database that has run a while (0: as a
#                                   fresh install behaves in its first minute: never analyzed)
#   KASSA_*                         passed through to the server, listed in the results header
#                                   (e.g. KASSA_SANDBOX_SETTLE_SECONDS=600: no settlement jobs
#                                   inside a 10 s run)
#   BENCH_SWITCH_INTERVAL=<s>       experiment: run the server with sys.setswitchinterval(s)
#                                   (default: unset, i.e. the plain `kassa serve`, 0.005 s)
#   BENCH_PG_ADMIN="-h 127.0.0.1 -U postgres -d test"   psql arguments for CREATE/DROP DATABASE
#   BENCH_PG_BASE=postgresql://postgres@127.0.0.1:5432  where the bench database is created
#
# Raw wrk output goes to bench/results/<date>-<db>.txt (a suffix is added when that exists)
# with the machine load before every run (uptime, whose load average counts this benchmark's
# own threads too, and top: CPU use and the busiest processes over half a second) and after
# it, the CPU time used by the server, the PostgreSQL backends and wrk, and a summary table.
# Everything started here is stopped on exit, also on failure or Ctrl-C.

set -euo pipefail

DB=${1:-sqlite}
case "$DB" in
  sqlite|postgres) ;;
  *) echo "usage: bash bench/run.sh sqlite|postgres" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
PY="$ROOT/.venv/bin/python"
KASSA="$ROOT/.venv/bin/kassa"
DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREAD_VARIANTS=${BENCH_THREADS:-"1 2"}
SCENARIOS=${BENCH_SCENARIOS:-"query payment_get create_payment create_task refund transactions transactions_cursor"}
ORDERS=${BENCH_ORDERS:-1000}
REFUND_ORDERS=${BENCH_REFUND_ORDERS:-1000}
REFUND_METHOD=${BENCH_REFUND_METHOD:-original}
REFUND_AMOUNT=${KASSA_MAX_AMOUNT_CENTS:-5000000}  # cents per pool order: the most one may be
HISTORY=${BENCH_HISTORY:-3000}
PROFILE=${BENCH_PROFILE:-}
read -r -a PYSPY_ARGS <<< "${BENCH_PYSPY_ARGS:---threads}"
read -r -a PG_ADMIN <<< "${BENCH_PG_ADMIN:--h 127.0.0.1 -U postgres -d test}"

for scenario in $SCENARIOS; do
  [[ -f "$BENCH/$scenario.lua" ]] || { echo "unknown scenario $scenario (no bench/$scenario.lua)" >&2; exit 2; }
done

case "$DURATION" in
  *m) SECONDS_RUN=$(( ${DURATION%m} * 60 )) ;;
  *s) SECONDS_RUN=${DURATION%s} ;;
  *) SECONDS_RUN=$DURATION ;;
esac
TASKS_PER_RUN=${BENCH_TASKS:-$(( 5000 * SECONDS_RUN ))}

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk; }
fi
[[ -x "$KASSA" ]] || { echo "no $KASSA: create the virtualenv first" >&2; exit 1; }

# One benchmark at a time on this machine: two would measure each other.
exec 9> /tmp/kassa-bench.lock
if ! flock -n 9; then
  echo "another bench/run.sh is running; waiting for it" >&2
  flock 9
fi

WORK=$(mktemp -d /tmp/kassa-bench.XXXXXX)
SERVE_PID=""
SINK_PID=""
SPY_PID=""
PG_DB=""
OUT=""

cleanup() {
  local rc=$?
  set +e
  for pid in "$SPY_PID" "$SERVE_PID" "$SINK_PID"; do
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
  done
  if [[ -n "$PG_DB" ]]; then
    psql "${PG_ADMIN[@]}" -qc "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" >/dev/null \
      && echo "dropped database $PG_DB"
  fi
  if [[ $rc -ne 0 && -n "${OUT:-}" && -f "$OUT" ]]; then
    echo "# RUN FAILED (exit $rc): the numbers above are incomplete" >> "$OUT"
  fi
  if [[ $rc -ne 0 && -f "$WORK/serve.log" ]]; then
    echo "--- last lines of the server log ---" >&2
    tail -n 30 "$WORK/serve.log" >&2
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

machine() {  # CPU use over half a second, and the busiest processes (ours included)
  top -b -n 2 -d 0.5 -o %CPU -w 200 | awk '
    /^top -/ { n++ }
    n == 2 && /^%Cpu/ { sub(/^%Cpu\(s\): */, ""); cpu = $0 }
    n == 2 && /^ *[0-9]+ / && $9 > 5 && c < 5 { busy = busy sprintf(" %s%% %s(%s)", $9, $12, $1); c++ }
    END { printf "cpu %s; busiest:%s\n", cpu, busy }'
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- a fresh server -----------------------------------------------------------------------
export KASSA_DATA_DIR="$WORK/data"
export KASSA_RATE_LIMIT="1000000/second"   # the default 100/s per key would throttle wrk
export KASSA_SQLITE_SYNCHRONOUS="FULL"     # the default, stated explicitly
export KASSA_PORT
KASSA_PORT=$(free_port)
unset KASSA_DATABASE_URL KASSA_REDIS_URL KASSA_RUN_WORKER
if [[ "$DB" == postgres ]]; then
  PG_DB="kassa_bench_$(date +%s)_$$"
  psql "${PG_ADMIN[@]}" -qc "CREATE DATABASE \"$PG_DB\"" >/dev/null
  export KASSA_DATABASE_URL="${BENCH_PG_BASE:-postgresql://postgres@127.0.0.1:5432}/$PG_DB"
fi

SINK_PORT=$(free_port)
"$PY" "$BENCH/sink.py" "$SINK_PORT" > "$WORK/sink.log" 2>&1 &
SINK_PID=$!
export BENCH_CALLBACK_URL="http://127.0.0.1:$SINK_PORT/webhooks/payment"

test_key() {  # "api_key api_secret" of the test key in `kassa accounts create --json` output
  "$PY" - "$1" <<'EOF'
import json, sys
keys = json.load(open(sys.argv[1]))["keys"]
test = next(k for k in keys if k["mode"] == "test")
print(test["api_key"], test["api_secret"])
EOF
}
"$KASSA" accounts create --name Bench --tier enterprise --json > "$WORK/account.json"
read -r BENCH_API_KEY BENCH_API_SECRET < <(test_key "$WORK/account.json")
export BENCH_API_KEY BENCH_API_SECRET
protocol_key() {  # "id secret" of the account's test-mode credential of protocol $2
  "$PY" -c 'import json, sys
creds = json.load(open(sys.argv[1]))["protocol_credentials"]
c = next(c for c in creds if c["mode"] == "test" and c["protocol"] == sys.argv[2])
print(c["id"], c["secret"])' "$1" "$2"
}
read -r BENCH_EPAY_PID BENCH_EPAY_KEY < <(protocol_key "$WORK/account.json" epay)
read -r BENCH_CRYPTO_KEY BENCH_CRYPTO_SECRET < <(protocol_key "$WORK/account.json" cryptogw)
export BENCH_EPAY_PID BENCH_EPAY_KEY BENCH_CRYPTO_KEY BENCH_CRYPTO_SECRET
# The transactions scenarios read a merchant of their own, whose history has the same size
# whatever ran before them.
HISTORY_ENV=()
if [[ " $SCENARIOS " == *" transactions "* || " $SCENARIOS " == *" transactions_cursor "* ]]; then
  "$KASSA" accounts create --name "Bench history" --tier enterprise --json \
    > "$WORK/history-account.json"
  read -r key secret < <(test_key "$WORK/history-account.json")
  HISTORY_ENV=("BENCH_API_KEY=$key" "BENCH_API_SECRET=$secret")
fi

SERVE_CMD=("$KASSA" serve)
if [[ -n "${BENCH_SWITCH_INTERVAL:-}" ]]; then
  SERVE_CMD=("$PY" -c 'import sys; sys.setswitchinterval(float(sys.argv.pop(1)));
from kassa.cli import main; sys.argv[0] = "kassa"; main()' "$BENCH_SWITCH_INTERVAL" serve)
fi
"${SERVE_CMD[@]}" > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
URL="http://127.0.0.1:$KASSA_PORT"
for _ in $(seq 150); do
  curl -fs "$URL/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVE_PID" 2>/dev/null || { echo "kassa serve exited" >&2; exit 1; }
  sleep 0.2
done
curl -fs "$URL/healthz" >/dev/null || { echo "kassa serve did not come up" >&2; exit 1; }
echo "kassa serve (pid $SERVE_PID) on $URL, $DB"

# --- results file -------------------------------------------------------------------------
mkdir -p "$BENCH/results"
OUT="$BENCH/results/$(date +%F)-$DB.txt"
n=2
while [[ -e "$OUT" ]]; do OUT="$BENCH/results/$(date +%F)-$DB.$n.txt"; n=$((n + 1)); done
SUMMARY="$WORK/summary.txt"
: > "$SUMMARY"
{
  echo "# Kassa load benchmark, $DB, $(date -Is)"
  echo "# git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
       "(uncommitted changes: $(git -C "$ROOT" status --porcelain -- src 2>/dev/null | wc -l) files in src)"
  echo "# $(nproc) CPUs; $(wrk --version 2>&1 | head -n 1 | cut -c1-40)"
  echo "# kassa serve with its worker in-process; KASSA_RATE_LIMIT=$KASSA_RATE_LIMIT;" \
       "account tier enterprise (no daily limit); test key (sandbox settles orders and original-channel refunds after 5 s)"
  if [[ "$DB" == sqlite ]]; then
    echo "# SQLite synchronous=$KASSA_SQLITE_SYNCHRONOUS, WAL, data dir on $(df -h --output=source "$WORK" | tail -n 1)"
  else
    echo "# PostgreSQL $(psql "${PG_ADMIN[@]}" -tAc 'SHOW server_version'), database $PG_DB," \
         "synchronous_commit=$(psql "${PG_ADMIN[@]}" -tAc 'SHOW synchronous_commit')"
  fi
  [[ -n "${BENCH_SWITCH_INTERVAL:-}" ]] && echo "# EXPERIMENT: sys.setswitchinterval($BENCH_SWITCH_INTERVAL)"
  extra=$(env | grep -E '^KASSA_' | grep -vE '^KASSA_(SECRET_KEY|DATA_DIR|PORT|DATABASE_URL|RATE_LIMIT|SQLITE_SYNCHRONOUS)=' | sort | tr '\n' ' ' || true)
  [[ -n "$extra" ]] && echo "# extra environment: $extra"
  echo "# wrk -c$CONNECTIONS -d$DURATION --latency; threads: $THREAD_VARIANTS"
  echo "# load before preparing: $(uptime)"
  echo "# machine before preparing: $(machine)"
} | tee "$OUT"

# --- fixtures (not measured) --------------------------------------------------------------
# The undispatched tasks form one pool, $WORK/tasks.txt; TASK_OFFSET lines of it are used.
TASK_OFFSET=0
: > "$WORK/tasks.txt"
ensure_tasks() {  # top the pool up to TASKS_PER_RUN unused tasks
  local remaining=$(( $(wc -l < "$WORK/tasks.txt") - TASK_OFFSET ))
  if (( remaining < TASKS_PER_RUN )); then
    "$PY" "$BENCH/prepare.py" tasks --url "$URL" --count $(( TASKS_PER_RUN - remaining )) \
      --out "$WORK/more.txt" | tee -a "$OUT"
    cat "$WORK/more.txt" >> "$WORK/tasks.txt"
  fi
}
if [[ " $SCENARIOS " == *" query "* || " $SCENARIOS " == *" payment_get "* ]]; then
  "$PY" "$BENCH/prepare.py" orders --url "$URL" --count "$ORDERS" --out "$WORK/orders.txt" \
    | tee -a "$OUT"
fi
if [[ " $SCENARIOS " == *" payment_get "* ]]; then  # a seed-004 Payment for each of them
  "$PY" "$BENCH/prepare.py" payments --url "$URL" --orders "$WORK/orders.txt" \
    --out "$WORK/payments.txt" | tee -a "$OUT"
fi
if [[ " $SCENARIOS " == *" create_payment "* ]]; then
  ensure_tasks
fi
# The paid orders the refund scenario cycles over, 1 cent a request; REFUND_USED: the most
# cents any one of them has lost so far (an upper bound, from refund.lua's report).
REFUND_USED=0
ensure_refund_pool() {  # a new pool unless every order can take one more run at 5,000/s
  local need=$(( (5000 * SECONDS_RUN + REFUND_ORDERS - 1) / REFUND_ORDERS + 2 ))
  if [[ ! -s "$WORK/refund-orders.txt" ]] || (( REFUND_USED + need > REFUND_AMOUNT )); then
    "$PY" "$BENCH/prepare.py" paid --url "$URL" --count "$REFUND_ORDERS" \
      --amount "$REFUND_AMOUNT" --out "$WORK/refund-orders.txt" | tee -a "$OUT"
    REFUND_USED=0
  fi
}
if [[ " $SCENARIOS " == *" refund "* ]]; then
  ensure_refund_pool
fi
if (( ${#HISTORY_ENV[@]} )); then
  env "${HISTORY_ENV[@]}" "$PY" "$BENCH/prepare.py" history --url "$URL" --count "$HISTORY" \
    --out "$WORK/cursors.txt" | tee -a "$OUT"
fi
"$PY" "$BENCH/prepare.py" wait-idle | tee -a "$OUT"
if [[ "$DB" == postgres && "${BENCH_PG_ANALYZE:-0}" == 1 ]]; then
  psql "${PG_ADMIN[@]}" -d "$PG_DB" -qc "ANALYZE" && echo "ANALYZE done" | tee -a "$OUT"
fi

# --- runs ---------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
ticks() {  # CPU time (user + system, clock ticks) of the given pids, 0 for gone ones
  local total=0 pid t
  for pid in "$@"; do
    t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$(( total + t ))
  done
  echo "$total"
}
db_pids() {  # the PostgreSQL backends serving the bench database
  [[ "$DB" == postgres ]] || return 0
  psql "${PG_ADMIN[@]}" -tAc \
    "SELECT pid FROM pg_stat_activity WHERE datname = '$PG_DB' AND pid <> pg_backend_pid()"
}

summarise() {  # scenario threads wrk-output-file cpu-line
  awk -v s="$1" -v t="$2" -v cpu="$4" '
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = $2 }
    /^ +99%/ { p99 = $2 }
    /^non-20[01] responses:/ { bad = $3 }
    /^WARNING: ids exhausted/ { bad = bad " (ids exhausted!)" }
    /^WARNING: escrow exhausted/ { bad = bad " (escrow exhausted!)" }
    END { printf "| %-19s | %d | %9s | %8s | %8s | %s | %s |\n", s, t, rps, p50, p99, bad, cpu }
  ' "$3" >> "$SUMMARY"
}

run_wrk() {  # scenario threads
  local scenario=$1 threads=$2 args=() env_args=()
  case "$scenario" in
    query) args=("$WORK/orders.txt") ;;
    payment_get) args=("$WORK/payments.txt") ;;
    create_payment)
      ensure_tasks
      tail -n +$(( TASK_OFFSET + 1 )) "$WORK/tasks.txt" > "$WORK/chunk.txt"
      args=("$WORK/chunk.txt" "$threads") ;;
    create_task) args=("bt$(date +%s)t$threads") ;;
    refund)
      ensure_refund_pool
      args=("$WORK/refund-orders.txt" "$REFUND_METHOD") ;;
    epay_mapi|cryptogw_create)  # fresh signed requests (the gateway's are good for 5 min)
      "$PY" "$BENCH/prepare.py" "${scenario%_*}" --count "$TASKS_PER_RUN" \
        --out "$WORK/signed.txt" | tee -a "$OUT"
      args=("$WORK/signed.txt" "$threads") ;;
    transactions) env_args=("${HISTORY_ENV[@]}") ;;
    transactions_cursor) env_args=("${HISTORY_ENV[@]}"); args=("$WORK/cursors.txt") ;;
  esac
  local raw="$WORK/wrk.$scenario.$threads.txt"
  {
    echo
    echo "=== $scenario, wrk -t$threads -c$CONNECTIONS -d$DURATION ==="
    echo "load before: $(uptime)"
    echo "machine before: $(machine)"
  } | tee -a "$OUT"
  local profile=""
  if [[ " $PROFILE " == *" $scenario "* ]]; then
    [[ -x "$ROOT/.venv/bin/py-spy" ]] || "$ROOT/.venv/bin/pip" install -q py-spy
    profile="$BENCH/results/$(basename "$OUT" .txt)-$scenario-t$threads.pyspy.txt"
    "$ROOT/.venv/bin/py-spy" record --pid "$SERVE_PID" --duration "$SECONDS_RUN" --rate 250 \
      --format raw "${PYSPY_ARGS[@]}" -o "$profile" > "$WORK/spy.log" 2>&1 &
    SPY_PID=$!
  fi
  local pg_pids server0 pg0
  mapfile -t pg_pids < <(db_pids)
  server0=$(ticks "$SERVE_PID")
  pg0=$(ticks "${pg_pids[@]}")
  env "${env_args[@]}" /usr/bin/time -o "$WORK/wrk.time" -f "%U %S" \
    wrk -t"$threads" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$BENCH/$scenario.lua" \
    "$URL" -- "${args[@]}" | tee "$raw" | tee -a "$OUT"
  local server_s pg_s wrk_s requests cpu
  server_s=$(( $(ticks "$SERVE_PID") - server0 ))
  pg_s=$(( $(ticks "${pg_pids[@]}") - pg0 ))
  wrk_s=$(awk '{ print $1 + $2 }' "$WORK/wrk.time")
  requests=$(awk '/requests in/ { print $1 }' "$raw")
  cpu=$(awk -v s="$server_s" -v p="$pg_s" -v w="$wrk_s" -v n="$requests" -v hz="$CLK_TCK" \
            -v d="$SECONDS_RUN" -v pg="$DB" 'BEGIN {
    out = sprintf("%.2f | %3.0f%%", 1000 * s / hz / n, 100 * s / hz / d)
    if (pg == "postgres") out = out sprintf(" | %.2f", 1000 * p / hz / n)
    printf "%s | %3.0f%%", out, 100 * w / d }')
  {
    echo "cpu: kassa serve $(awk -v t="$server_s" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')s," \
         "postgres backends $(awk -v t="$pg_s" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')s," \
         "wrk ${wrk_s}s over ${SECONDS_RUN}s for $requests requests"
    echo "load after: $(uptime)"
  } | tee -a "$OUT"
  if [[ -n "$SPY_PID" ]]; then
    wait "$SPY_PID" || true
    SPY_PID=""
    echo "py-spy record ${PYSPY_ARGS[*]}: $profile" | tee -a "$OUT"
    grep -v "^$" "$WORK/spy.log" | tail -n 3 | tee -a "$OUT"
    if [[ -s "$profile" ]]; then
      "$PY" "$BENCH/pyspy_summary.py" "$profile" --rate 250 --seconds "$SECONDS_RUN" \
        | tee -a "$OUT"
    fi
  fi
  summarise "$scenario" "$threads" "$raw" "$cpu"
  if [[ "$scenario" == create_payment ]]; then
    local used
    used=$(awk '/^task lines used:/ { print $4 }' "$raw")
    TASK_OFFSET=$(( TASK_OFFSET + ${used:?wrk did not report the task lines used} ))
  fi
  if [[ "$scenario" == refund ]]; then
    local most
    most=$(awk '/^most refunds to one order:/ { print $6 }' "$raw")
    REFUND_USED=$(( REFUND_USED + ${most:?wrk did not report the refunds per order} ))
  fi
  "$PY" "$BENCH/prepare.py" wait-idle | tee -a "$OUT"
}

for scenario in $SCENARIOS; do
  for threads in $THREAD_VARIANTS; do
    run_wrk "$scenario" "$threads"
  done
done

{
  echo
  echo "=== summary ($DB) ==="
  pgcols=("" "")
  [[ "$DB" == postgres ]] && pgcols=(" PG backends CPU ms/req |" "---|")
  echo "| scenario            | t | req/s     | p50      | p99      | unexpected status |" \
       "server CPU ms/req | server CPU |${pgcols[0]} wrk CPU |"
  echo "|---------------------|---|-----------|----------|----------|---|---|---|${pgcols[1]}---|"
  cat "$SUMMARY"
} | tee -a "$OUT"
kill -0 "$SERVE_PID" 2>/dev/null || { echo "kassa serve died during the benchmark" >&2; exit 1; }
if [[ "$DB" == postgres ]]; then  # misplanned lookups show as many tuples read per scan
  echo "index use (pg_stat_user_indexes):" | tee -a "$OUT"
  psql "${PG_ADMIN[@]}" -d "$PG_DB" -c "SELECT relname, indexrelname, idx_scan,
      idx_tup_read, round(idx_tup_read::numeric / greatest(idx_scan, 1), 1) AS read_per_scan
    FROM pg_stat_user_indexes WHERE idx_scan > 0 ORDER BY idx_tup_read DESC LIMIT 10" \
    | tee -a "$OUT"
fi
errors=$(grep -c "ERROR" "$WORK/serve.log" || true)
echo "server log: $errors ERROR lines" | tee -a "$OUT"
if (( errors > 0 )); then  # the first one in full
  awk '/ERROR/ && !seen { seen = 1; n = 0 } seen && n < 40 { print "server log: " $0; n++ }' \
    "$WORK/serve.log" | tee -a "$OUT"
fi
echo "results: $OUT"
