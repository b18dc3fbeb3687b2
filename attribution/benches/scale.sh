#!/usr/bin/env bash
# Scaling of one job from a small world to a large one, measured side by side: ROUNDS rounds
# (default 3) of one run on each world, interleaved; wall and CPU time from /usr/bin/time and
# the stage times each run prints. The worlds are bench.sh's work directories:
#
#   attribution/benches/bench.sh 5000000 /tmp/b5 && attribution/benches/bench.sh 50000000 /tmp/b50
#   attribution/benches/scale.sh /tmp/b5 /tmp/b50
#
# The job is the five heuristic models with --no-probabilistic (what DuckDB is compared on).
# Ends with each world's best wall and best user+sys time, and their ratios. A run whose inputs
# the host had evicted from the page cache shows as wall ≫ CPU; best-of-N leaves it out.
set -euo pipefail

SMALL=${1:?usage: scale.sh SMALL_WORKDIR LARGE_WORKDIR}
LARGE=${2:?usage: scale.sh SMALL_WORKDIR LARGE_WORKDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
TALLY=${TALLY:-${CARGO_TARGET_DIR:-$HERE/../../target}/debug/tally}
ROUNDS=${ROUNDS:-3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

for r in $(seq "$ROUNDS"); do
  for w in "$SMALL" "$LARGE"; do
    /usr/bin/time -f "%e %U %S %M" -o "$TMP/time" "$TALLY" --config "$w/tally.toml" --data "$w/data" attribute \
      --memory-limit 4G --models last_touch,first_touch,linear,position_based,time_decay --no-probabilistic > "$TMP/out" 2>&1
    read -r wall user sys kb < "$TMP/time"
    cpu=$(echo "$user + $sys" | bc -l)
    echo "$w round $r: ${wall} s wall, ${cpu} s user+sys, $((kb / 1024)) MiB peak; $(grep -o 'stages:.*' "$TMP/out")"
    echo "$w $wall $cpu" >> "$TMP/all"
  done
done
awk -v small="$SMALL" -v large="$LARGE" '
  { if (!($1 in wall) || $2 < wall[$1]) wall[$1] = $2; if (!($1 in cpu) || $3 < cpu[$1]) cpu[$1] = $3 }
  END {
    printf "best: %s %.2f s wall, %.2f s cpu; %s %.2f s wall, %.2f s cpu\n", small, wall[small], cpu[small], large, wall[large], cpu[large]
    printf "ratio large/small: %.1fx wall, %.1fx cpu\n", wall[large] / wall[small], cpu[large] / cpu[small]
  }' "$TMP/all"
