#!/usr/bin/env bash
# Side by side, in one run: `tally attribute` vs the same job as DuckDB SQL
# (attribution/benches/duckdb_attribution.py) over the same stored Parquet.
#
#   cargo build -p tally      # the dev profile (opt-level 3 for our crates, arrow, parquet)
#   RUNS=3 attribution/benches/bench.sh 5000000 [WORKDIR]
#
# Generates the sample world with about TOUCHPOINTS touchpoints (conversions in proportion),
# imports it once (kept in WORKDIR between runs), drops nothing from the page cache but reads
# every input file once first so both engines start warm, then measures wall time and peak
# RSS with /usr/bin/time, RUNS times (default 1) interleaved, keeping each side's fastest run
# (the machine is shared and noisy). Both engines get the same cores and a 4 GiB memory
# limit. Prints Markdown table rows for docs/benchmarks.md.
set -euo pipefail

N=${1:?usage: bench.sh TOUCHPOINTS [WORKDIR]}
WORK=${2:-/tmp/tally-attribution-bench-$N}
HERE=$(cd "$(dirname "$0")" && pwd)
TALLY=${TALLY:-${CARGO_TARGET_DIR:-$HERE/../../target}/debug/tally}
THREADS=$(nproc)
mkdir -p "$WORK"
cat > "$WORK/tally.toml" <<'EOF'
[policy]
jurisdiction = "US"
plaintext_identifiers = "hash"
k_anonymity = 50
[[policy.storage]]
local = "*"
[policy.retention]
conversions = 36500
touchpoints = 36500
spend = 36500
baseline = 36500
EOF
T() { "$TALLY" --config "$WORK/tally.toml" --data "$WORK/data" "$@"; }

if [ ! -f "$WORK/data/.imported" ]; then
  rm -rf "$WORK/world" "$WORK/data"
  "$TALLY" sample --out "$WORK/world" --touchpoints "$N" >&2
  T import touchpoints "$WORK/world/touchpoints.parquet" >&2
  T import conversions "$WORK/world/conversions.parquet" >&2
  touch "$WORK/data/.imported"
fi
touches=$(python3 -c "import duckdb; print(duckdb.sql(\"select count(*) from read_parquet('$WORK/data/touchpoints/**/*.parquet')\").fetchall()[0][0])")
convs=$(python3 -c "import duckdb; print(duckdb.sql(\"select count(*) from read_parquet('$WORK/data/conversions/**/*.parquet')\").fetchall()[0][0])")
find "$WORK/data/touchpoints" "$WORK/data/conversions" -name '*.parquet' -exec cat {} + > /dev/null

measure() { # label, command…  → "label|wall s|peak MiB"
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$@" > "$WORK/$label.out"
  read -r wall kb < "$WORK/time.txt"
  echo "$label|$wall|$((kb / 1024))"
}
best() { # previous best, new → the faster
  if [ -z "$1" ]; then echo "$2"; return; fi
  IFS='|' read -r _ a _ <<< "$1"; IFS='|' read -r _ b _ <<< "$2"
  if (( $(echo "$b < $a" | bc -l) )); then echo "$2"; else echo "$1"; fi
}

HEURISTIC=last_touch,first_touch,linear,position_based,time_decay
tally5=; duck=; tally6=
for _ in $(seq "${RUNS:-1}"); do
  tally5=$(best "$tally5" "$(measure tally-heuristic "$TALLY" --config "$WORK/tally.toml" --data "$WORK/data" attribute --memory-limit 4G --models $HEURISTIC --no-probabilistic)")
  rm -rf "$WORK/duck" "$WORK/duck-tmp"; mkdir -p "$WORK/duck"
  duck=$(best "$duck" "$(measure duckdb python3 "$HERE/duckdb_attribution.py" --data "$WORK/data" --out "$WORK/duck" --threads "$THREADS" --memory-limit 4GB --temp-dir "$WORK/duck-tmp")")
  tally6=$(best "$tally6" "$(measure tally-all "$TALLY" --config "$WORK/tally.toml" --data "$WORK/data" attribute --memory-limit 4G)")
done

IFS='|' read -r _ dw dm <<< "$duck"
row() {
  IFS='|' read -r label w m <<< "$1"
  printf '| %s | %s | %s | %s | %s s | %s MiB | %s s | %s MiB | %.2f× |\n' \
    "$touches" "$convs" "$2" "$label" "$w" "$m" "$dw" "$dm" "$(echo "$w / $dw" | bc -l)"
}
echo "| touchpoints | conversion rows | models | tally run | tally wall | tally peak RSS | DuckDB wall | DuckDB peak RSS | ratio (tally / DuckDB) |"
echo "|---|---|---|---|---|---|---|---|---|"
row "$tally5" "5 heuristic, --no-probabilistic (same job as DuckDB)"
row "$tally6" "all 6 (+ markov) and the probabilistic step"
grep -h "stages" "$WORK/tally-heuristic.out" "$WORK/tally-all.out" | sed 's/^/tally /' >&2
cat "$WORK/duckdb.out" >&2
