#!/usr/bin/env python3
"""Import throughput: `tally import touchpoints FILE.parquet` vs a DuckDB peer, same data, same run.

Usage: python3 ingest/benches/import_throughput.py [--rows 5000000] [--tally PATH] [--runs 3] [--input synthetic|world] [--order person|random]

The input is a touchpoints file in the import format (SPEC 5): identifiers as SHA-256 hex
(~85% present, one person per 25 touches), click ids on clicks, RFC-3339-typed timestamps
over 30 days, 2 advertisers. Tally validates every value, pseudonymizes three identifiers per
row with keyed BLAKE3, partitions by (advertiser_id, date) and writes zstd Parquet with fsync.
The peer is DuckDB (2 threads) doing the nearest thing it can: read the same file, decode the
hex digests to blobs, and COPY it partitioned by (advertiser_id, date) to zstd Parquet.
With `--input world` the file is instead the sample world's touchpoints (`tally sample
--touchpoints N`): realistic identifiers, rows grouped by person, 61 days.
Reported: rows/s of each, the ratio, and peak RSS of the tally process.
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

import duckdb

ap = argparse.ArgumentParser()
ap.add_argument("--rows", type=int, default=5_000_000)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--input", choices=["synthetic", "world"], default="synthetic")
ap.add_argument("--order", choices=["person", "random"], default="person",
                help="synthetic rows grouped by person (as exports usually are) or in random order "
                     "(no two neighbouring rows share an identifier: the converter's run memo never hits)")
ap.add_argument("--tally", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "debug", "tally"))
args = ap.parse_args()

work = tempfile.mkdtemp(prefix="tally-import-bench-")
src = os.path.join(work, "touchpoints.parquet")
con = duckdb.connect()
con.sql("set threads = 2")
t0 = time.time()
if args.input == "world":
    world = os.path.join(work, "world")
    yesterday = (__import__("datetime").date.today() - __import__("datetime").timedelta(days=1)).isoformat()
    subprocess.run([args.tally, "sample", "--out", world, "--touchpoints", str(args.rows), "--end", yesterday], check=True, capture_output=True)
    src = os.path.join(world, "touchpoints.parquet")
    args.rows = con.sql(f"select count(*) from read_parquet('{src}')").fetchall()[0][0]
else:
  con.sql(f"""
copy (
  select case when i % 3 = 0 then 'globex' else 'acme' end as advertiser_id,
         't' || i as touch_id,
         ['tiktok','meta','google','snap'][1 + (i % 4)::int] as channel,
         'c' || (i % 12) as campaign_id,
         'ag' || (i % 40) as adgroup_id,
         'ad' || (i % 200) as ad_id,
         case when i % 10 = 0 then 'click' else 'impression' end as touch_type,
         (timestamp '2026-10-01' + to_microseconds((hash(i) % 2592000000000)::bigint))::timestamptz as touch_time,
         case when hash(i, 1) % 100 < 85 then sha256('user' || (i // 25) || '@example.com') end as em_sha256,
         case when hash(i, 2) % 100 < 85 then sha256('1650' || lpad(((i // 25) % 10000000)::varchar, 7, '0')) end as ph_sha256,
         case when hash(i, 3) % 100 < 85 then sha256('cust-' || (i // 25)) end as external_id_sha256,
         case when i % 10 = 0 then 'ck' || md5(i::varchar) end as click_id,
         ['ios','android','windows','macos'][1 + (hash(i // 25) % 4)::int] as device_os,
         ['ca','tx','ny','fl','wa'][1 + (hash(i // 25, 9) % 5)::int] as geo_state,
         case when i % 10 = 0 then 0.8 else 0.004 end as cost
  from range({args.rows}) t(i)
  {"order by hash(i, 42)" if args.order == "random" else ""}
) to '{src}' (format parquet, compression zstd, row_group_size 1000000)
""")
print(f"generated {args.rows:,} rows ({os.path.getsize(src)/1e6:.0f} MB) in {time.time()-t0:.1f}s", file=sys.stderr)

def run_tally(i):
    data = os.path.join(work, f"tally-{i}")
    t = time.time()
    # /usr/bin/time reports tally's own peak RSS (RUSAGE_CHILDREN would count the forked copy
    # of this Python process, DuckDB's buffers included, before exec).
    p = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M", args.tally, "--data", data, "import", "touchpoints", src], capture_output=True, text=True)
    dt = time.time() - t
    peaks.append(int(p.stderr.rsplit("maxrss_kb=", 1)[1].split()[0]) / 1024 if "maxrss_kb=" in p.stderr else float("nan"))
    if p.returncode != 0 or f"imported {args.rows} of {args.rows}" not in p.stdout:
        sys.exit(f"tally failed: {p.stdout}{p.stderr}")
    shutil.rmtree(data)
    return dt

def run_duckdb(i):
    out = os.path.join(work, f"duck-{i}")
    t = time.time()
    con.sql(f"""
      copy (select * replace (unhex(em_sha256) as em_sha256, unhex(ph_sha256) as ph_sha256,
                              unhex(external_id_sha256) as external_id_sha256),
                   cast(touch_time as date) as date
            from read_parquet('{src}'))
      to '{out}' (format parquet, compression zstd, partition_by (advertiser_id, date))
    """)
    dt = time.time() - t
    shutil.rmtree(out)
    return dt

tally_times, duck_times, peaks = [], [], []
for i in range(args.runs):  # interleaved, so both see the same machine noise
    tally_times.append(run_tally(i))
    duck_times.append(run_duckdb(i))
peak_mb = max(peaks)
t, d = min(tally_times), min(duck_times)
print(f"rows: {args.rows:,}   runs: {args.runs} (best of each)")
print(f"tally import : {t:6.2f} s  {args.rows/t/1e6:5.2f} M rows/s   peak RSS {peak_mb:.0f} MB   all: {', '.join(f'{x:.2f}' for x in tally_times)}")
print(f"duckdb COPY  : {d:6.2f} s  {args.rows/d/1e6:5.2f} M rows/s   all: {', '.join(f'{x:.2f}' for x in duck_times)}")
print(f"ratio tally/duckdb throughput: {d/t:.2f}")
shutil.rmtree(work)
