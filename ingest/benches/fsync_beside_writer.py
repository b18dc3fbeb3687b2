#!/usr/bin/env python3
"""What an acknowledgement's fdatasync costs when a Parquet flush runs beside it, side by side.

Usage: python3 ingest/benches/fsync_beside_writer.py [--dir DIR] [--seconds 8] [--rounds 2]

The foreground plays the write-ahead log: 400 KB appended + fdatasync every 5 ms (about one
1,000-event request at half load). The background plays the flusher, writing 40 MB files in
1 MiB writes, three ways, interleaved in one run:
- none:     no background writer (the floor);
- unpaced:  write the whole file, then fsync it (what the flusher did before);
- paced:    fdatasync after every 1 MiB (what `PartitionedWriter::with_paced_writeback` does).
Prints the foreground's fdatasync latency p50/p90/p99/max per mode and round. DIR must be on
the file system under test (default: a temp dir under /tmp).
"""
import argparse, os, tempfile, threading, time


def log_syncs(path, seconds):
    """The foreground alone: 400 KB appended to `path` and fdatasynced every 5 ms for `seconds`;
    returns the sorted sync latencies in ms. (Also the disk probe of serve_throughput.py.)"""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_TRUNC, 0o644)
    rec, lat, end = os.urandom(400_000), [], time.time() + seconds
    try:
        while time.time() < end:
            t0 = time.perf_counter()
            os.write(fd, rec)
            os.fdatasync(fd)
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)
    finally:
        os.close(fd)
    return sorted(lat)


def run(root, seconds, mode):
    stop = threading.Event()
    def background():
        buf, i = os.urandom(1 << 20), 0
        while not stop.is_set():
            p = os.path.join(root, f"pq-{i}.tmp")
            fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            for _ in range(40):
                os.write(fd, buf)
                if mode == "paced":
                    os.fdatasync(fd)
            os.fsync(fd)
            os.close(fd)
            os.rename(p, os.path.join(root, f"pq-{i}.parquet"))
            if i >= 2:
                os.unlink(os.path.join(root, f"pq-{i - 2}.parquet"))
            i += 1
    t = threading.Thread(target=background) if mode != "none" else None
    if t:
        t.start()
    lat = log_syncs(os.path.join(root, "wal.log"), seconds)
    stop.set()
    if t:
        t.join()
    for f in os.listdir(root):
        os.unlink(os.path.join(root, f))
    q = lambda p: lat[int(p * (len(lat) - 1))]
    return f"{mode:>8}: {len(lat):>5} syncs  p50 {q(.5):6.2f}  p90 {q(.9):6.2f}  p99 {q(.99):6.2f}  max {lat[-1]:7.2f} ms"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="fsync-bench-", dir=args.dir)
    try:
        for r in range(args.rounds):
            for mode in ["none", "unpaced", "paced"]:
                print(f"round {r + 1} {run(root, args.seconds, mode)}", flush=True)
    finally:
        os.rmdir(root)
