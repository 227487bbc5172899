#!/usr/bin/env python3
"""Draws the benchmark plots of one bench/run.sh results directory.

Usage: bench/plot.py RESULTS_DIR

Reads the JSON files bench/run.sh wrote there and writes, beside them:
  summary.svg     every target row of docs/perf.md as a cost ratio
                  (tierlock / baseline within one run, or a value / its
                  bound), with its target: left of the target mark is met;
                  throughput rows are shown as time per operation
  contention.svg  in-process contention: throughput vs threads, tierlock and
                  the baselines, and the fairness spread (max/median ops)
Needs matplotlib (Debian python3-matplotlib); bench/run.sh installs it.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("svg")
matplotlib.rcParams["svg.fonttype"] = "none"  # text, not glyph paths: small files
matplotlib.rcParams["svg.hashsalt"] = "tierlock"  # stable ids across runs
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ratios  # noqa: E402


def load_dir(path):
    results = {}
    cli = None
    for name in sorted(os.listdir(path)):
        if not name.endswith(".json"):
            continue
        full = os.path.join(path, name)
        with open(full, encoding="utf-8") as f:
            data = json.load(f)
        if "benchmarks" not in data:
            cli = {r["command"]: r for r in data["results"]}
            continue
        _, _, file_results = ratios.load(full)
        results.update(file_results)
    return results, cli


def value(results, name, metric="time"):
    r = results.get(name)
    if not r or "error" in r:
        return None
    return ratios.median_of(r, metric)[0]


def summary_rows(results, cli):
    """(label, ratio where < 1 is better, target ratio), one per target row of
    docs/perf.md, met or missed. Every ratio is a cost: time per operation
    (contention rows: the inverse of the throughput ratio the table also
    gives), lateness or extra time over the target's yardstick."""
    rows = []

    def add(label, ours, base, target, metric="time", higher_better=False):
        a, b = value(results, ours, metric), value(results, base, metric)
        if a is None or not b:
            return
        rows.append((label, (b / a) if higher_better else (a / b), target))

    def absolute(label, ours, metric, limit):
        # A target with no baseline (a p99 bound): shown as value / bound.
        a = value(results, ours, metric)
        if a is not None:
            rows.append((label, a / limit, 1.0))

    add("uncontended acquire vs flock", "uncontended/tierlock_acquire",
        "uncontended/flock_ex", 1.3)
    add("uncontended acquire vs its floor (flock + fstatat)",
        "uncontended/tierlock_acquire", "uncontended/floor_flock_ex_fstatat",
        1.3)
    add("new handle (warm) vs open+flock+close",
        "new_handle/tierlock_open_warm", "new_handle/open_flock_close", 2.0)
    for t in (1, 2, 4, 8):
        add(f"contention {t} thr: time per op vs mutex+flock",
            f"contention/tierlock/threads:{t}",
            f"contention/mutex_flock_shared_fd/threads:{t}", 1.0,
            metric="items_per_second", higher_better=True)
    for variant, what in (("tierlock_acquire", "handoff p50"),
                          ("tierlock_acquire_stop", "handoff p50, stop token"),
                          ("tierlock_acquire_timeout", "handoff p50, timed")):
        for c in (1, 2):
            add(f"{what}, {c} CPU{'s' if c > 1 else ''}",
                f"handoff/{variant}/cpus:{c}",
                f"handoff/flock_blocking/cpus:{c}", 1.2, metric="p50_us")
    absolute("lone timeout lateness p99 / 1 ms, recorded holder",
             "timeout/tierlock_kernel_spaced_recorded_holder", "p99_us", 1000.0)
    absolute("lone timeout lateness p99 / 1 ms, holder without record",
             "timeout/tierlock_kernel_spaced", "p99_us", 1000.0)
    for v in ("kept_handle", "open_warm", "open_cold"):
        add(f"registry {v}: 10,000 vs 10 entries",
            f"registry/{v}/entries:10000", f"registry/{v}/entries:10", 1.2)
    if cli and "tierlock run" in cli and "flock(1)" in cli:
        rows.append(("CLI: tierlock run vs flock(1)",
                     cli["tierlock run"]["median"] / cli["flock(1)"]["median"],
                     1.3))
    return rows


def plot_summary(results, cli, out):
    rows = summary_rows(results, cli)
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(rows) + 1.4))
    labels = [r[0] for r in rows][::-1]
    values = [r[1] for r in rows][::-1]
    targets = [r[2] for r in rows][::-1]
    colors = ["#2e7d32" if v <= t else "#c62828" for v, t in zip(values, targets)]
    y = range(len(rows))
    ax.barh(y, values, color=colors, height=0.6)
    ax.scatter(targets, y, marker="|", s=300, color="black", zorder=3,
               label="target")
    for yi, v in zip(y, values):
        ax.text(v * 1.03, yi, f"{v:.2f}x", va="center", fontsize=8)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
    if max(values) > 4:
        # One far miss (a lateness many times its bound) would squash the
        # rest against 1.0 on a linear axis.
        ax.set_xscale("log")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("tierlock / baseline, same run (lower is better; green = "
                  "target met)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("tierlock against its baselines", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def plot_contention(results, out):
    variants = [("contention/tierlock", "tierlock"),
                ("contention/mutex_flock_shared_fd", "std::mutex + flock, shared fd"),
                ("contention/flock_own_fd", "flock, own fd per thread"),
                ("contention/ref_mutex_only", "std::mutex only (reference)")]
    threads = [1, 2, 4, 8]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for prefix, label in variants:
        tput = [value(results, f"{prefix}/threads:{t}", "items_per_second")
                for t in threads]
        spread = [value(results, f"{prefix}/threads:{t}", "ops_max_over_median")
                  for t in threads]
        pts = [(t, v / 1e6) for t, v in zip(threads, tput) if v]
        if not pts:
            continue
        drawn = True
        style = "-o" if prefix.endswith("tierlock") else "--o"
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        sp = [(t, v) for t, v in zip(threads, spread) if v]
        if sp:
            ax2.plot([p[0] for p in sp], [p[1] for p in sp], style, label=label)
    if not drawn:
        plt.close(fig)
        return False
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(threads)
        ax.set_xticklabels([str(t) for t in threads])
        ax.set_xlabel("threads contending for one lock")
        ax.grid(True, alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("acquire+release, million per second (log)")
    ax1.set_title("Throughput (higher is better)", fontsize=10)
    ax2.set_ylabel("ops of the busiest thread / median thread")
    ax2.set_title("Fairness spread (1.0 is perfectly fair)", fontsize=10)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    results, cli = load_dir(argv[1])
    for name, ok in (("summary.svg", plot_summary(results, cli,
                                                  os.path.join(argv[1], "summary.svg"))),
                     ("contention.svg", plot_contention(results,
                                                        os.path.join(argv[1], "contention.svg")))):
        print(f"plot.py: {name} " + ("written" if ok else "skipped (no data)"),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
