#!/usr/bin/env python3
"""Each saved report: `tally report NAME` vs the same SQL in DuckDB, on the same stored Parquet.

    cargo build --release -p tally     # DuckDB is an optimized build: so is the Tally compared
    python3 queries/benches/reports.py --data /path/to/data --advertiser acme --runs 3

DATA is a Tally data root holding the tables the reports read (touchpoints, conversions,
spend, conversions_dedup, attributed_conversions), e.g. the 50M-touch world of
attribution/benches/bench.sh after `tally attribute`, plus its spend imported.

Per report, interleaved RUNS times, fastest kept (the machine is shared and noisy):
- Tally: the real command, `tally report NAME --advertiser ID --format csv`, wall time of the
  process (start-up, catalog, the audit entry, the query, CSV to /dev/null).
- DuckDB (2 threads, like the machine): a fresh in-process connection, views over the same
  advertiser's hive directories, the report's SQL with its `$param`s replaced by the same
  literals and Tally's functions (`safe_div`, `path_agg`) as macros, rows fetched. Process start-up is not counted for DuckDB.
Both outputs are compared cell by cell (numbers to 1e-9); a difference fails the run.
Prints a Markdown table for docs/benchmarks.md.
"""

import argparse
import csv
import io
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
REPORTS = HERE.parent / "reports"
TABLES = ["conversions", "touchpoints", "spend", "baseline", "conversions_dedup", "attributed_conversions"]


# Tally's SQL functions as DuckDB macros (queries/src/udf.rs, queries/src/path_agg.rs).
MACROS = [
    "CREATE MACRO safe_div(a, b) AS CASE WHEN b = 0 THEN NULL ELSE a / b END",
    # path_agg: channels in (touch_time, touch_id) order, consecutive repeats collapsed into `ch xN`.
    "CREATE MACRO run_starts(l) AS list_filter(range(1, len(l) + 1), lambda i: i = 1 OR l[i] <> l[i - 1])",
    """CREATE MACRO collapse_runs(l) AS array_to_string(list_transform(run_starts(l),
        lambda s, j: l[s] || CASE WHEN coalesce(run_starts(l)[j + 1], len(l) + 1) - s > 1
            THEN ' x' || (coalesce(run_starts(l)[j + 1], len(l) + 1) - s)::VARCHAR ELSE '' END), ' > ')""",
    "CREATE MACRO path_agg(ch, t, id) AS collapse_runs(list(ch ORDER BY t, id))",
]


def params(sql):
    """The report's declared parameters: name → (type, default)."""
    out = {}
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        m = re.match(r"--\s*param:\s*(\w+)\s+(\w+)\s+(\S+)", line)
        if m:
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def duck_sql(sql, values):
    """The report with literals for its parameters (DuckDB has no named placeholders in views)."""
    decl = params(sql)

    def literal(name):
        kind, default = decl[name]
        v = values.get(name, default)
        return {"date": f"DATE '{v}'", "text": f"'{v}'", "int": v}[kind]

    return re.sub(r"\$(\w+)", lambda m: literal(m.group(1)), sql)


def duck_connection(data, advertiser, threads):
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    for macro in MACROS:
        con.execute(macro)
    for t in TABLES:
        d = Path(data) / t / f"advertiser_id={advertiser}"
        if d.exists():
            con.execute(
                f"CREATE VIEW {t} AS SELECT '{advertiser}' AS advertiser_id, * "
                f"FROM read_parquet('{d}/*/*.parquet', hive_partitioning = true)"
            )
    return con


def run_tally(tally, data, config, name, advertiser, values):
    args = [tally, "--data", data]
    if config:
        args += ["--config", config]
    args += ["report", name, "--advertiser", advertiser, "--format", "csv"]
    for k, v in values.items():
        args += ["--param", f"{k}={v}"]
    started = time.perf_counter()
    out = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"tally report {name} failed: {out.stderr.decode()}")
    rows = list(csv.reader(io.StringIO(out.stdout.decode())))[1:]
    return elapsed, rows


def run_duck(data, advertiser, threads, sql):
    started = time.perf_counter()
    con = duck_connection(data, advertiser, threads)
    rows = con.execute(sql).fetchall()
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed, rows


def same_cell(t, d):
    """A CSV cell of Tally's output against DuckDB's value (numbers to 1e-9 relative)."""
    if d is None:
        return t == ""
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        try:
            return abs(float(t) - float(d)) <= 1e-9 * max(1.0, abs(float(d)))
        except ValueError:
            return False
    if isinstance(d, bool):
        return t == str(d).lower()
    return t == str(d)


def differences(tally_rows, duck_rows):
    """The first rows where the two outputs differ (empty: identical)."""
    if len(tally_rows) != len(duck_rows):
        return [f"{len(tally_rows)} rows vs {len(duck_rows)}"]
    out = []
    for i, (t, d) in enumerate(zip(tally_rows, duck_rows)):
        if len(t) != len(d) or not all(same_cell(a, b) for a, b in zip(t, d)):
            out.append(f"row {i}: tally {t} vs duckdb {list(d)}")
    return out[:3]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", default=None, help="tally.toml with a long retention (fixed-date worlds)")
    ap.add_argument("--advertiser", default="acme")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--param", action="append", default=[], help="name=value for every report that takes it")
    ap.add_argument("--tally", default=None)
    args = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", str(HERE.parent.parent / "target"))
    tally = args.tally or str(Path(target) / "release" / "tally")
    if not Path(tally).exists():
        sys.exit(f"{tally} is missing: cargo build --release -p tally (or give --tally)")
    given = dict(p.split("=", 1) for p in args.param)

    # Warm the page cache for both sides alike.
    for t in TABLES:
        for f in (Path(args.data) / t).rglob("*.parquet"):
            with open(f, "rb") as fh:
                while fh.read(1 << 20):
                    pass

    rows_out = []
    mismatches = 0
    for path in sorted(REPORTS.glob("*.sql")):
        name = path.stem
        sql = path.read_text()
        values = {k: v for k, v in given.items() if k in params(sql)}
        dsql = duck_sql(sql, values)
        best_t = best_d = float("inf")
        for _ in range(args.runs):
            t, rows_t = run_tally(tally, args.data, args.config, name, args.advertiser, values)
            best_t = min(best_t, t)
            d, rows_d = run_duck(args.data, args.advertiser, args.threads, dsql)
            best_d = min(best_d, d)
        diff = differences(rows_t, rows_d)
        for line in diff:
            print(f"DIFFERENT: {name}: {line}")
        rows_out.append((name, len(rows_t), best_t, best_d))
        mismatches += bool(diff)
        print(f"{name}: tally {best_t:.3f} s, duckdb {best_d:.3f} s, ratio {best_t / best_d:.2f}", flush=True)

    ratios = [t / d for _, _, t, d in rows_out]
    print()
    print("| report | rows | tally (best of %d) | DuckDB (best of %d) | **tally / DuckDB** |" % (args.runs, args.runs))
    print("|---|---|---|---|---|")
    for (name, n, t, d), r in zip(rows_out, ratios):
        print(f"| `{name}` | {n} | {t:.2f} s | {d:.2f} s | **{r:.2f}×** |")
    print(f"\nmedian ratio {statistics.median(ratios):.2f}×, worst {max(ratios):.2f}×")
    print("outputs: identical on every report" if not mismatches else f"outputs: {mismatches} report(s) DIFFER (see above)")
    if mismatches:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
