#!/usr/bin/env python3
"""The attribution job of SPEC section 6 written independently as DuckDB SQL.

It reads the same stored Parquet as `tally attribute` (the hive-partitioned `conversions`
and `touchpoints` under --data) and computes the same thing the naive way — dedup with
window functions and a recursive CTE, the deterministic match as range joins on each
identifier, the heuristic models with window functions:

  conversions_dedup       one row per distinct conversion (same conversion_key recipe)
  attributed_conversions  last_touch, first_touch, linear, position_based, time_decay

Two uses:
  --out DIR       write both tables as hive-partitioned Parquet (the benchmark peer)
  --compare       compare with what `tally attribute` stored in --data and print a JSON
                  report; exit 1 on any difference (the correctness test under cargo test)

Usage: duckdb_attribution.py --data DIR [--from D --to D] [--out DIR] [--compare] [--temp-dir DIR]
       [--threads N] [--memory-limit 4GB] [--click-window-hours 168] [--view-window-hours 24]
       [--half-life-hours 168]
"""

import argparse
import json
import sys
import time

import duckdb

HEURISTIC = ["last_touch", "first_touch", "linear", "position_based", "time_decay"]


def build(con, a):
    us = 3_600_000_000
    cw, vw, hl = int(a.click_window_hours * us), int(a.view_window_hours * us), int(a.half_life_hours * us)
    data = a.data
    con.execute(f"""
      create or replace temp view conversions as
        select * from read_parquet('{data}/conversions/**/*.parquet', hive_partitioning = true);
      create or replace temp view touchpoints as
        select * from read_parquet('{data}/touchpoints/**/*.parquet', hive_partitioning = true);
    """)
    if a.from_ is None or a.to is None:
        lo, hi = con.execute("select min(date), max(date) from conversions").fetchone()
        a.from_ = a.from_ or str(lo)
        a.to = a.to or str(hi)
    win_lo = f"epoch_us(date '{a.from_}')"
    win_hi = f"epoch_us(date '{a.to}' + 1)"

    # 1. Dedup. Copies within ±2 days of the window, test events out.
    con.execute(f"""
      create or replace temp table copies as
        select *, epoch_us(event_time) as t, epoch_us(received_at) as r
        from conversions
        where not is_test and date between date '{a.from_}' - 2 and date '{a.to}' + 2;

      create or replace temp table keyed as
        select *, row_number() over (partition by advertiser_id, source_id, event_name, event_id
                                     order by t, r, origin) as rn
        from copies where event_id is not null;

      -- A copy joins the conversion opened by the first copy if at most 48 h after it.
      create or replace temp table chained as
        with recursive chain as (
          select advertiser_id, source_id, event_name, event_id, rn, t as gstart from keyed where rn = 1
          union all
          select k.advertiser_id, k.source_id, k.event_name, k.event_id, k.rn,
                 case when k.t - c.gstart > {48 * us} then k.t else c.gstart end
          from chain c join keyed k
            on k.advertiser_id = c.advertiser_id and k.source_id = c.source_id
           and k.event_name = c.event_name and k.event_id = c.event_id and k.rn = c.rn + 1
        )
        select k.*, c.gstart,
               sha256(concat_ws(chr(31), k.advertiser_id, k.source_id, k.event_name, k.event_id,
                                cast(c.gstart as varchar)))[1:32] as conversion_key
        from keyed k join chain c
          on k.advertiser_id = c.advertiser_id and k.source_id = c.source_id
         and k.event_name = c.event_name and k.event_id = c.event_id and k.rn = c.rn;

      create or replace temp table lone as
        with b as (
          select *, concat_ws(chr(31), advertiser_id, source_id, event_name, '', cast(t as varchar),
                              cast(r as varchar), origin, coalesce(order_id, '')) as base
          from copies where event_id is null
        )
        select *, sha256(base || chr(31) || cast(row_number() over (partition by base order by t) - 1 as varchar))[1:32]
                  as conversion_key
        from b;

      create or replace temp table grouped as
        select * exclude (rn, gstart) from chained
        union all by name
        select * exclude (base) from lone;

      create or replace temp table conversions_dedup as
        with ranked as (
          select *, row_number() over (partition by conversion_key
                                       order by origin <> 'server', t, r, origin) as w
          from grouped
        ),
        filled as (
          select conversion_key,
                 first(action_source order by t, r, origin) filter (where action_source is not null) as action_source,
                 first(em order by t, r, origin) filter (where em is not null) as em,
                 first(ph order by t, r, origin) filter (where ph is not null) as ph,
                 first(external_id order by t, r, origin) filter (where external_id is not null) as external_id,
                 first(click_id order by t, r, origin) filter (where click_id is not null) as click_id,
                 first(device_os order by t, r, origin) filter (where device_os is not null) as device_os,
                 first(geo_state order by t, r, origin) filter (where geo_state is not null) as geo_state,
                 first(value order by t, r, origin) filter (where value is not null) as value,
                 first(currency order by t, r, origin) filter (where currency is not null) as currency,
                 first(order_id order by t, r, origin) filter (where order_id is not null) as order_id,
                 case when bool_and(origin = 'server') then 'server'
                      when bool_and(origin = 'browser') then 'browser' else 'both' end as sources
          from grouped group by conversion_key
        )
        select w.advertiser_id, w.source_id, w.event_id, w.event_name, w.event_time, w.received_at, w.origin,
               coalesce(w.action_source, f.action_source) as action_source,
               coalesce(w.em, f.em) as em, coalesce(w.ph, f.ph) as ph,
               coalesce(w.external_id, f.external_id) as external_id,
               coalesce(w.click_id, f.click_id) as click_id,
               coalesce(w.device_os, f.device_os) as device_os,
               coalesce(w.geo_state, f.geo_state) as geo_state,
               coalesce(w.value, f.value) as value, coalesce(w.currency, f.currency) as currency,
               coalesce(w.order_id, f.order_id) as order_id,
               w.is_test, w.opt_out, w.jurisdiction, w.key_id, w.conversion_key, f.sources,
               w.t, cast(w.event_time as date) as date
        from ranked w join filled f using (conversion_key)
        where w.w = 1 and w.t >= {win_lo} and w.t < {win_hi};
    """)

    # 2. Eligible touches sharing an identifier: one range join per identifier.
    joins = []
    for k, col in enumerate(["click_id", "em", "ph", "external_id"]):
        joins.append(f"""
          select c.conversion_key, t.touch_id, {k} as k
          from conversions_dedup c join touches t
            on c.advertiser_id = t.advertiser_id and c.{col} = t.{col}
           and t.tt <= c.t
           and c.t - t.tt <= case when t.touch_type = 'click' then {cw} else {vw} end""")
    lookback_days = -(-max(cw, vw) // (24 * us))
    con.execute(f"""
      create or replace temp table touches as
        select advertiser_id, touch_id, channel, campaign_id, touch_type, epoch_us(touch_time) as tt,
               em, ph, external_id, click_id
        from touchpoints
        where date between date '{a.from_}' - {lookback_days} and date '{a.to}'
          and touch_time >= to_timestamp(({win_lo} - {max(cw, vw)}) / 1000000)
          and touch_time < to_timestamp({win_hi} / 1000000);

      create or replace temp table path as
        with pairs as ({" union all ".join(joins)}),
        best as (select conversion_key, touch_id, min(k) as k from pairs group by all),
        t1 as (select distinct on (touch_id) touch_id, channel, campaign_id, touch_type, tt from touches
               where touch_id in (select touch_id from best) order by touch_id, tt)
        select c.advertiser_id, c.conversion_key, c.event_name, c.event_time, c.t, c.value,
               b.touch_id, b.k, t1.channel, t1.campaign_id, t1.touch_type = 'click' as click, t1.tt,
               row_number() over w as pos, count(*) over (partition by c.conversion_key) as n,
               row_number() over (partition by c.conversion_key order by t1.touch_type = 'click' desc, t1.tt desc, b.touch_id desc) as last_rank,
               row_number() over (partition by c.conversion_key order by t1.touch_type = 'click' desc, t1.tt, b.touch_id) as first_rank,
               pow(2, -(c.t - t1.tt) / {float(hl)}) as decay
        from best b join conversions_dedup c using (conversion_key) join t1 using (touch_id)
        window w as (partition by c.conversion_key order by t1.tt, b.touch_id);
    """)

    # 3. The heuristic models.
    con.execute("""
      create or replace temp table attributed_conversions as
        with credited as (
          select *, 'last_touch' as model, 1.0::double as credit from path where last_rank = 1
          union all
          select *, 'first_touch', 1.0::double from path where first_rank = 1
          union all
          select *, 'linear', 1.0::double / n from path
          union all
          select *, 'position_based',
                 case when n = 1 then 1.0::double when n = 2 then 0.5::double
                      when pos = 1 or pos = n then 0.4::double else 0.2::double / (n - 2) end
          from path
          union all
          select *, 'time_decay', decay / sum(decay) over (partition by conversion_key) from path
        )
        select advertiser_id, conversion_key, event_name, event_time, model, 'deterministic' as method,
               ['click_id', 'em', 'ph', 'external_id'][k + 1] as match_key, touch_id, channel, campaign_id,
               credit, credit * value as value_credit, credit as credit_low, credit as credit_high,
               cast(event_time as date) as date
        from credited;
    """)


def compare(con, a):
    """Compares with Tally's stored output; returns (report, ok)."""
    data = a.data
    con.execute(f"""
      create or replace temp view tally_dedup as
        select * from read_parquet('{data}/conversions_dedup/**/*.parquet', hive_partitioning = true)
        where date between date '{a.from_}' and date '{a.to}';
      create or replace temp view tally_attr as
        select * from read_parquet('{data}/attributed_conversions/**/*.parquet', hive_partitioning = true)
        where date between date '{a.from_}' and date '{a.to}' and method = 'deterministic';
    """)
    cols = ("conversion_key, sources, origin, event_time, received_at, source_id, event_id, event_name, "
            "action_source, em, ph, external_id, click_id, device_os, geo_state, value, currency, order_id")
    r = {}
    r["conversions_duckdb"] = con.execute("select count(*) from conversions_dedup").fetchone()[0]
    r["conversions_tally"] = con.execute("select count(*) from tally_dedup").fetchone()[0]
    r["dedup_rows_only_duckdb"] = con.execute(
        f"select count(*) from (select {cols} from conversions_dedup except all select {cols} from tally_dedup)").fetchone()[0]
    r["dedup_rows_only_tally"] = con.execute(
        f"select count(*) from (select {cols} from tally_dedup except all select {cols} from conversions_dedup)").fetchone()[0]
    for model in ["last_touch", "first_touch"]:
        q = f"select conversion_key, touch_id, match_key, credit from {{}} where model = '{model}'"
        r[f"{model}_conversions"] = con.execute(f"select count(*) from ({q.format('attributed_conversions')})").fetchone()[0]
        r[f"{model}_only_duckdb"] = con.execute(
            f"select count(*) from ({q.format('attributed_conversions')} except all {q.format('tally_attr')})").fetchone()[0]
        r[f"{model}_only_tally"] = con.execute(
            f"select count(*) from ({q.format('tally_attr')} except all {q.format('attributed_conversions')})").fetchone()[0]
    r["campaign_credit_max_abs_diff"] = {}
    r["campaigns"] = {}
    for model in HEURISTIC:
        row = con.execute(f"""
          with d as (select campaign_id, sum(credit) c, sum(value_credit) v from attributed_conversions where model = '{model}' group by 1),
               t as (select campaign_id, sum(credit) c, sum(value_credit) v from tally_attr where model = '{model}' group by 1)
          select count(*), max(abs(coalesce(d.c, 0) - coalesce(t.c, 0))),
                 max(abs(coalesce(d.v, 0) - coalesce(t.v, 0)) / greatest(1, abs(coalesce(d.v, 0))))
          from d full join t using (campaign_id)
        """).fetchone()
        r["campaigns"][model] = row[0]
        r["campaign_credit_max_abs_diff"][model] = max(row[1] or 0.0, row[2] or 0.0)
    # Every deterministic touch row, per conversion and model, in all models but markov.
    r["rows_duckdb"] = con.execute("select count(*) from attributed_conversions").fetchone()[0]
    r["rows_tally"] = con.execute(f"select count(*) from tally_attr where model in ({', '.join(repr(m) for m in HEURISTIC)})").fetchone()[0]
    r["markov_credit_sum_error"] = con.execute(
        "select coalesce(max(abs(s - 1)), 0) from (select sum(credit) s from tally_attr where model = 'markov' group by conversion_key)").fetchone()[0]
    ok = (r["conversions_duckdb"] == r["conversions_tally"] and r["dedup_rows_only_duckdb"] == 0 and r["dedup_rows_only_tally"] == 0
          and all(r[f"{m}_only_duckdb"] == 0 and r[f"{m}_only_tally"] == 0 for m in ["last_touch", "first_touch"])
          and all(v <= 1e-9 for v in r["campaign_credit_max_abs_diff"].values())
          and r["rows_duckdb"] == r["rows_tally"] and r["markov_credit_sum_error"] <= 1e-9)
    return r, ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--from", dest="from_")
    p.add_argument("--to")
    p.add_argument("--out")
    p.add_argument("--compare", action="store_true")
    p.add_argument("--threads", type=int)
    p.add_argument("--memory-limit")
    p.add_argument("--temp-dir", help="where DuckDB spills (default: .tmp in the working directory)")
    p.add_argument("--click-window-hours", type=float, default=168)
    p.add_argument("--view-window-hours", type=float, default=24)
    p.add_argument("--half-life-hours", type=float, default=168)
    a = p.parse_args()
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    if a.threads:
        con.execute(f"set threads = {a.threads}")
    if a.memory_limit:
        con.execute(f"set memory_limit = '{a.memory_limit}'")
    if a.temp_dir:
        con.execute(f"set temp_directory = '{a.temp_dir}'")
    started = time.time()
    build(con, a)
    if a.out:
        con.execute(f"copy (select * exclude (t) from conversions_dedup) to '{a.out}/conversions_dedup' "
                    "(format parquet, partition_by (advertiser_id, date), overwrite_or_ignore true)")
        con.execute(f"copy attributed_conversions to '{a.out}/attributed_conversions' "
                    "(format parquet, partition_by (advertiser_id, date), overwrite_or_ignore true)")
    elapsed = time.time() - started
    if a.compare:
        report, ok = compare(con, a)
        report["ok"] = ok
        print(json.dumps(report, sort_keys=True))
        sys.exit(0 if ok else 1)
    n = con.execute("select count(*) from conversions_dedup").fetchone()[0]
    rows = con.execute("select count(*) from attributed_conversions").fetchone()[0]
    print(json.dumps({"seconds": round(elapsed, 3), "conversions": n, "rows": rows}))


if __name__ == "__main__":
    main()
