#!/usr/bin/env python3
"""Median table of an evaluation run (scripts/eval-fragsched.sh OUT).

usage: bench/eval_summary.py OUT [--dat=FILE] [--spread]
  --dat=FILE  data for scripts/eval-bars.gp
  --spread    also print each figure's range over the repetitions (min-max)
  --paired    instead: per link and workload, fragmented against precopy
              within each repetition (the two ran back to back in the same
              script run), the median of those changes and their range, the
              final rounds' pages, and how fragmented stopped

Reads OUT/LINK-WORKLOAD-REP.json ({"migrations": [report, ...]}, one report
per policy) and prints, per link and workload, the median over repetitions
of total time, downtime, live rounds and wire bytes for each policy, the
change against precopy, and whether every migration verified; then how
much time any policy could save (below); then, if eval-fragsched.sh -d
measured them, each workload's dirty rate.

The bound: every policy here sends all of memory in its first pass, and
that pass is the same work whatever follows, so no policy can take less
than the first pass. precopy's first-pass share of its total time caps the
time any of them can save against it (before the pause costs anything)."""
import glob
import json
import os
import re
import statistics
import sys


def load(outdir):
    runs = {}
    for path in sorted(glob.glob(os.path.join(outdir, "*-*-*.json"))):
        m = re.match(r"(\w+)-(\w+)-(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        link, wl, _ = m.groups()
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue  # a failed run leaves an empty file; its .err says why
        for r in data.get("migrations", []):
            runs.setdefault((link, wl, r["policy"]), []).append(r)
    return runs


def first_pass(r):
    """Time of the first round that sent most of memory: the same work for
    every policy, and on a shared machine the noisiest part of a run. (For a
    started command whose memory appears after tracking began, that is
    round 1, not round 0.)"""
    live = [x for x in r["rounds"] if not x["final"]]
    big = max(live, key=lambda x: x["sent_pages"])
    return big["t_start_s"] + big["time_s"]


def after_first(r):
    return r["total_s"] - first_pass(r)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt(xs, f, spread):
    """Median, and with spread its min-max over the repetitions."""
    if not spread or len(xs) < 2:
        return f % med(xs)
    return (f + " (" + f + "–" + f + ")") % (med(xs), min(xs), max(xs))


def cells(runs, links, order):
    """(link, workload) pairs of the runs, links and workloads in report order."""
    for link in links:
        for wl in sorted({k[1] for k in runs if k[0] == link}, key=lambda w: order.index(w) if w in order else 99):
            yield link, wl


def load_paired(outdir):
    """{(link, wl): [(precopy report, fragmented report), ...]}, one pair
    per repetition file."""
    pairs = {}
    for path in sorted(glob.glob(os.path.join(outdir, "*-*-*.json"))):
        m = re.match(r"(\w+)-(\w+)-(\d+)\.json$", os.path.basename(path))
        if not m:
            continue
        try:
            with open(path) as f:
                byp = {r["policy"]: r for r in json.load(f).get("migrations", [])}
        except (OSError, ValueError):
            continue
        if "precopy" in byp and "fragmented" in byp:
            pairs.setdefault(m.groups()[:2], []).append((byp["precopy"], byp["fragmented"]))
    return pairs


def stop_kind(r):
    why = r.get("stop_reason", "")
    if "target" in why:
        return "fits"
    if "sent live once more" in why:
        return "one more"
    if "pause now" in why or "no progress" in why:
        return "pause now"
    return why.split(":")[0] or "?"


def print_paired(outdir):
    order = ["idle", "hotspot", "sweep", "stressng", "redis"]
    pairs = load_paired(outdir)
    print("| link | workload | reps | time | downtime | wire bytes | final round pages, precopy / fragmented (medians) | fragmented stopped |")
    print("|---|---|---|---|---|---|---|---|")

    def change(ps, key):
        xs = [(f[key] / p[key] - 1) * 100 for p, f in ps if p[key] > 0]
        if not xs:
            return "n/a"
        return "%+.0f%% (%+.0f%% to %+.0f%%)" % (med(xs), min(xs), max(xs))

    for (link, wl) in sorted(pairs, key=lambda k: (k[0] != "loopback", order.index(k[1]) if k[1] in order else 99)):
        ps = pairs[(link, wl)]
        kinds = {}
        for _, f in ps:
            kinds[stop_kind(f)] = kinds.get(stop_kind(f), 0) + 1
        print("| %s | %s | %d | %s | %s | %s | %d / %d | %s |" % (
            link, wl, len(ps), change(ps, "total_s"), change(ps, "downtime_s"), change(ps, "wire_bytes"),
            med([p["final_pages"] for p, _ in ps]), med([f["final_pages"] for _, f in ps]),
            ", ".join("%s %d" % kv for kv in sorted(kinds.items()))))


def write_dat(runs, path):
    """Median total time and downtime per link and workload, one block per
    link, for scripts/eval-bars.gp."""
    order = ["idle", "hotspot", "sweep", "stressng", "redis"]
    with open(path, "w") as f:
        for link in ("loopback", "tbf"):
            f.write("# %s: workload, total s (precopy fragmented downtime), downtime ms (same order)\n" % link)
            for wl in order:
                row = [wl]
                for key, scale in (("total_s", 1), ("downtime_s", 1000)):
                    for pol in ("precopy", "fragmented", "downtime"):
                        rs = runs.get((link, wl, pol), [])
                        row.append("%.3f" % (med([r[key] for r in rs]) * scale) if rs else "NaN")
                f.write(" ".join(row) + "\n")
            f.write("\n\n")


def main():
    spread = "--spread" in sys.argv[1:]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    dat = [a[6:] for a in sys.argv[1:] if a.startswith("--dat=")]
    outdir = args[0] if args else "eval-out"
    if "--paired" in sys.argv[1:]:
        print_paired(outdir)
        return
    runs = load(outdir)
    if dat:
        write_dat(runs, dat[0])
    order = ["idle", "hotspot", "sweep", "stressng", "redis"]
    links = sorted({k[0] for k in runs}, key=lambda l: ["loopback", "tbf"].index(l) if l in ("loopback", "tbf") else 9)
    print("| link | workload | policy | n | total s | first pass s | after it s | downtime ms | live rounds | wire MiB | verified | vs precopy: time / downtime / bytes / after-first-pass time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for link, wl in cells(runs, links, order):
        base = runs.get((link, wl, "precopy"), [])
        bt = med([r["total_s"] for r in base])
        bd = med([r["downtime_s"] for r in base])
        bw = med([r["wire_bytes"] for r in base])
        ba = med([after_first(r) for r in base])
        for pol in ("precopy", "fragmented", "downtime"):
            rs = runs.get((link, wl, pol), [])
            if not rs:
                continue
            ts = [r["total_s"] for r in rs]
            ds = [r["downtime_s"] * 1000 for r in rs]
            ws = [r["wire_bytes"] / 1048576 for r in rs]
            t, d, w = med(ts), med(ds) / 1000, med(ws) * 1048576
            n = med([r["live_rounds"] for r in rs])
            fp = med([first_pass(r) for r in rs])
            af = med([after_first(r) for r in rs])
            ok = all(r["verification"]["done"] and r["verification"]["ok"] for r in rs)
            cmp = ""
            if pol != "precopy" and base:
                cmp = "%+.0f%% / %+.0f%% / %+.0f%% / %+.0f%%" % ((t / bt - 1) * 100, (d / bd - 1) * 100,
                                                      (w / bw - 1) * 100, (af / ba - 1) * 100)
            print("| %s | %s | %s | %d | %s | %.2f | %.2f | %s | %g | %s | %s | %s |" % (
                link, wl, pol, len(rs), fmt(ts, "%.2f", spread), fp, af, fmt(ds, "%.1f", spread), n,
                fmt(ws, "%.1f", spread), "yes" if ok else "NO", cmp))
    print_bounds(runs, links, order)
    print_dirty_rates(outdir, order)


def print_bounds(runs, links, order):
    print()
    print("| link | workload | precopy: total s | its first pass s | largest time cut any policy could make | fragmented's cut |")
    print("|---|---|---|---|---|---|")
    for link, wl in cells(runs, links, order):
        base = runs.get((link, wl, "precopy"), [])
        frag = runs.get((link, wl, "fragmented"), [])
        if not base:
            continue
        bt = med([r["total_s"] for r in base])
        fp = med([first_pass(r) for r in base])
        cut = "%.0f%%" % ((1 - med([r["total_s"] for r in frag]) / bt) * 100) if frag else "-"
        print("| %s | %s | %.2f | %.2f | %.0f%% | %s |" % (link, wl, bt, fp, (1 - fp / bt) * 100, cut))


def print_dirty_rates(outdir, order):
    """OUT/dirtyrate-WORKLOAD.json (eval-fragsched.sh -d): how fast each
    workload writes, against the 1 Gbit/s link."""
    rows = []
    for path in glob.glob(os.path.join(outdir, "dirtyrate-*.json")):
        wl = os.path.basename(path)[len("dirtyrate-"):-len(".json")]
        try:
            with open(path) as f:
                rows.append((wl, json.load(f)))
        except (OSError, ValueError):
            continue
    if not rows:
        return
    rows.sort(key=lambda x: order.index(x[0]) if x[0] in order else 99)
    print()
    print("| workload | pages written per 1 s window (mean, min-max) | MiB/s | share of 1 Gbit/s (mean / max) | quiet reads (50 ms) | longest quiet s |")
    print("|---|---|---|---|---|---|")
    for wl, d in rows:
        w, q = d["windows"], d["quiet"]
        print("| %s | %.0f (%.0f-%.0f) | %.1f | %.2f / %.2f | %d of %d | %.2f |" % (
            wl, w["mean_pages_per_s"], w["min_pages_per_s"], w["max_pages_per_s"],
            w["mean_bytes_per_s"] / 1048576, d.get("dirty_to_link", 0), d.get("max_dirty_to_link", 0),
            q["intervals"], q["of"], q["longest_s"]))


if __name__ == "__main__":
    main()
