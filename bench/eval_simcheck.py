#!/usr/bin/env python3
"""Does the simulator agree with real runs on the same traces?

For each policy: migrate a real workload with --record-trace, then run
`migstream sim --trace` with the same policy and a link model calibrated
from that run (its end-to-end page rate and its compression ratios), and
compare total migration time.

usage: bench/eval_simcheck.py [--build DIR] [--out DIR] [--reps N] [--link loopback|tbf]
                              [--workload hotspot|idle|stressng] [--size SIZE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def migrate(a, policy, trace):
    ms = os.path.join(a.build, "tools", "migstream")
    dirtier = os.path.join(a.build, "sources", "migstream-dirtier")
    cmd = [ms, "migrate", "--policy", policy, "--chain", "zero,delta,lz4", "--json",
           "--record-trace", trace]
    if a.link == "tbf":
        cmd = [os.path.join(HERE, "..", "scripts", "netns-tbf.sh"), "-p", "mssim", "exec", "A"] + cmd + [
            "--receiver-netns", "mssimB", "--local-listen", "10.231.0.2"]
    if a.workload == "stressng":
        cmd += ["--warmup", "4", "--", "stress-ng", "--vm", "1", "--vm-bytes", a.size, "--vm-keep",
                "--timeout", "600s", "--quiet"]
    else:
        rate = "10" if a.workload == "idle" else "100000"
        cmd += ["--ready", "ready", "--warmup", "1", "--", dirtier, "--size", a.size, "--rate", rate,
                "--counter", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)["migrations"][0]


def calibrate(rep):
    """A line through the live rounds, time = pages / rate + overhead (least
    squares; the overhead is the bitmap scan, the barrier round trip and the
    pipeline draining, which small rounds feel most), and the first-send and
    resend compression ratios."""
    live = [r for r in rep["rounds"] if not r["final"] and r["sent_pages"]]
    xs = [r["sent_pages"] for r in live]
    ys = [r["time_s"] for r in live]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0
    if slope <= 0:
        slope, overhead = sum(ys) / sum(xs), 0.0
    else:
        overhead = max(0.0, my - slope * mx)
    first = rep["rounds"][0]
    ratio = first["wire_bytes"] / max(1, first["raw_bytes"])
    later = [r for r in rep["rounds"][1:] if r["sent_pages"]]
    raw = sum(r["raw_bytes"] for r in later)
    resend = sum(r["wire_bytes"] for r in later) / raw if raw else ratio
    return 1 / slope, overhead, max(ratio, 1e-4), max(resend, 1e-4)


def simulate(a, policy, trace, page_rate, overhead, ratio, resend):
    ms = os.path.join(a.build, "tools", "migstream")
    bw = "125M" if a.link == "tbf" else "100G"
    # a round barrier costs two one-way latencies in the link model
    lat = "%.3f" % (max(overhead, 0.0002) / 2 * 1000)
    cmd = [ms, "sim", "--trace", trace, "--policy", policy, "--bandwidth", bw, "--latency", lat,
           "--page-rate", "%.0f" % page_rate, "--ratio", "%.4f" % ratio,
           "--resend-ratio", "%.4f" % resend, "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)["migrations"][0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--build", default="build")
    p.add_argument("--out", default="eval-simcheck")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--link", default="loopback", choices=["loopback", "tbf"])
    p.add_argument("--workload", default="hotspot", choices=["hotspot", "idle", "stressng"])
    p.add_argument("--size", default="512M")
    p.add_argument("--resim", action="store_true",
                   help="only re-run the simulations on the traces and reports of an earlier --out")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    netns = os.path.join(HERE, "..", "scripts", "netns-tbf.sh")
    if a.link == "tbf" and not a.resim:
        subprocess.run([netns, "-p", "mssim", "up", "1gbit"], check=True)
    errs = []
    try:
        print("| link | workload | policy | rep | real total s | sim total s | diff | real rounds | sim rounds | calibration (pages/s, ms per round, ratio, resend) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for policy in ("precopy", "fragmented", "downtime"):
            for rep in range(1, a.reps + 1):
                trace = os.path.join(a.out, "%s-%s-%s-%d.trace" % (a.link, a.workload, policy, rep))
                if a.resim:
                    with open(trace + ".json") as f:
                        real = json.load(f)["real"]
                else:
                    real = migrate(a, policy, trace)
                rate, overhead, ratio, resend = calibrate(real)
                sim = simulate(a, policy, trace, rate, overhead, ratio, resend)
                diff = sim["total_s"] / real["total_s"] - 1
                errs.append(abs(diff))
                print("| %s | %s | %s | %d | %.2f | %.2f | %+.1f%% | %d | %d | %.0f, %.1f, %.3f, %.3f |" % (
                    a.link, a.workload, policy, rep, real["total_s"], sim["total_s"], diff * 100,
                    real["live_rounds"], sim["live_rounds"], rate, overhead * 1000, ratio, resend))
                sys.stdout.flush()
                with open(trace + ".json", "w") as f:
                    json.dump({"real": real, "sim": sim}, f)
    finally:
        if a.link == "tbf" and not a.resim:
            subprocess.run([netns, "-p", "mssim", "down"], check=False)
    if errs:
        print("\nmedian |diff| %.1f%%, max %.1f%%" % (statistics.median(errs) * 100, max(errs) * 100))


if __name__ == "__main__":
    main()
