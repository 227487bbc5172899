#!/usr/bin/env python3
"""Prints core_bench's JSON as markdown tables of medians and within-run ratios.

Usage: bench/ratios.py RESULT.json

RESULT.json is Google Benchmark's --benchmark_out (format json) of core_bench.
With --benchmark_repetitions the per-benchmark "median" and "cv" aggregates are
used; without repetitions the median is taken over whatever runs there are.
Standard library only.
"""

import json
import statistics
import sys
from collections import defaultdict

# Each row of issue 7: the benchmarks under `prefix`, the metric compared, the
# baseline every ratio is taken against ("{threads}" is filled in per row) and
# the targets (benchmark-name prefix -> (comparison, ratio)).
GROUPS = [
    {
        "prefix": "uncontended/",
        "title": "1. Uncontended acquire+release, handle reused",
        "metric": "time",
        "baseline": "uncontended/flock_ex",
        "targets": {"uncontended/tierlock_": ("<=", 1.3)},
    },
    {
        "prefix": "new_handle/",
        "title": "2. New handle per acquire, directory 10 components deep",
        "metric": "time",
        "baseline": "new_handle/open_flock_close",
        "second": ("new_handle/ref_flock_kept_fd", "vs kept-fd flock"),
        "targets": {"new_handle/tierlock_open_warm": ("<=", 2.0)},
        "target_only_exact": True,
    },
    {
        "prefix": "contention/",
        "title": "3. In-process contention, one lock (throughput; higher is better)",
        "metric": "items_per_second",
        "baseline": "contention/mutex_flock_shared_fd/threads:{threads}",
        "targets": {"contention/tierlock/": (">=", 1.0)},
        "sort_by_threads": True,
        "counters": [
            ("ops_max_over_median", "ops max/med", "{:.2f}"),
            ("ops_min_over_median", "ops min/med", "{:.2f}"),
            ("wait_p50_us", "wait p50 µs", "{:,.2f}"),
            ("wait_p99_us", "wait p99 µs", "{:,.1f}"),
            ("wait_max_us", "wait max µs", "{:,.0f}"),
            ("ctx_switches_per_op", "ctx sw/op", "{:.2f}"),
        ],
    },
]

TO_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
NAME_SUFFIXES = ("/real_time", "/manual_time", "/iterations:1")


def base_name(run_name):
    changed = True
    while changed:
        changed = False
        for suffix in NAME_SUFFIXES:
            if run_name.endswith(suffix):
                run_name = run_name[: -len(suffix)]
                changed = True
    return run_name


def metric_value(entry, metric):
    if metric == "time":
        return entry["real_time"] * TO_NS[entry.get("time_unit", "ns")]
    return entry.get(metric)


def load(path):
    """Returns {name: {"median": entry, "cv": entry or None, "error": str}}."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    medians, cvs, runs, errors, order = {}, {}, defaultdict(list), {}, []
    for entry in data.get("benchmarks", []):
        name = base_name(entry.get("run_name", entry["name"]))
        if name not in order:
            order.append(name)
        if entry.get("error_occurred"):
            errors[name] = entry.get("error_message", "error")
            continue
        if entry.get("run_type") == "aggregate":
            kind = entry.get("aggregate_name")
            if kind == "median":
                medians[name] = entry
            elif kind == "cv":
                cvs[name] = entry
        else:
            runs[name].append(entry)
    results = {}
    for name in order:
        if name in errors:
            results[name] = {"error": errors[name]}
        elif name in medians:
            results[name] = {"median": medians[name], "cv": cvs.get(name)}
        elif runs.get(name):
            results[name] = {"runs": runs[name]}
    return data.get("context", {}), order, results


def median_of(result, key):
    """The median of `key` ("time", a counter) and its cv (fraction or None)."""
    if "median" in result:
        value = metric_value(result["median"], key)
        cv = None
        if result.get("cv") is not None:
            raw = result["cv"].get("real_time" if key == "time" else key)
            if raw is not None:
                cv = raw  # Google Benchmark reports cv as a fraction
        return value, cv
    values = [metric_value(r, key) for r in result["runs"]]
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    med = statistics.median(values)
    cv = (statistics.stdev(values) / statistics.mean(values)
          if len(values) > 1 and statistics.mean(values) else None)
    return med, cv


def fmt_value(value, metric):
    if value is None:
        return "–"
    if metric == "time":
        return f"{value:,.0f} ns"
    return f"{value / 1e6:.3f} Mops/s"


def fmt_ratio(value, base):
    if value is None or not base:
        return "–"
    return f"{value / base:.2f}x"


def target_for(group, name):
    for prefix, target in group["targets"].items():
        if group.get("target_only_exact") and name != prefix:
            continue
        if name.startswith(prefix):
            return target
    return None


def print_group(group, order, results):
    names = [n for n in order if n.startswith(group["prefix"]) and n in results]
    if not names:
        return
    # Random interleaving shuffles the JSON, so order rows here: per thread
    # count, the baseline, other baselines, tierlock, then references.
    baseline_stem = group["baseline"].split("{threads}")[0]

    def row_key(name):
        tail = name.rsplit("threads:", 1)
        threads = int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0
        variant = name[len(group["prefix"]):]
        if name.startswith(baseline_stem) and (
                "{threads}" in group["baseline"] or name == group["baseline"]):
            kind = 0
        elif variant.startswith("tierlock"):
            kind = 2
        elif variant.startswith("ref_"):
            kind = 3
        else:
            kind = 1
        return (threads, kind, name)

    names.sort(key=row_key)
    metric = group["metric"]
    counters = group.get("counters", [])
    second = group.get("second")
    header = ["benchmark", "median", "cv", "ratio"]
    if second:
        header.append(second[1])
    header.append("target")
    header += [label for _, label, _ in counters]
    print(f"### {group['title']}")
    print()
    baseline_note = group["baseline"].replace("{threads}", "N")
    print(f"ratio: vs `{baseline_note}` (same run)"
          + (f"; second ratio vs `{second[0]}`" if second else ""))
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for name in names:
        result = results[name]
        short = name[len(group["prefix"]):]
        if "error" in result:
            print(f"| {short} | error: {result['error']} |"
                  + " |" * (len(header) - 2))
            continue
        value, cv = median_of(result, metric)
        threads = name.rsplit("threads:", 1)[1] if "threads:" in name else ""
        base_name_ = group["baseline"].replace("{threads}", threads)
        base = (median_of(results[base_name_], metric)[0]
                if base_name_ in results and "error" not in results[base_name_]
                else None)
        is_base = name == base_name_
        row = [f"**{short}**" if is_base else short,
               fmt_value(value, metric),
               f"{cv * 100:.0f}%" if cv is not None else "–",
               fmt_ratio(value, base)]
        if second:
            sec = results.get(second[0])
            sec_value = (median_of(sec, metric)[0]
                         if sec and "error" not in sec else None)
            row.append(fmt_ratio(value, sec_value))
        target = target_for(group, name)
        if target and value is not None and base:
            op, bound = target
            ratio = value / base
            met = ratio <= bound if op == "<=" else ratio >= bound
            row.append(f"{op.replace('<=', '≤').replace('>=', '≥')} {bound}x "
                       + ("met" if met else "**missed**"))
        else:
            row.append("")
        for key, _, fmt in counters:
            v, _ = median_of(result, key)
            row.append(fmt.format(v) if v is not None else "–")
        print("| " + " | ".join(row) + " |")
    print()


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    context, order, results = load(argv[1])
    print(f"core_bench run {context.get('date', '?')} on "
          f"{context.get('host_name', '?')}: {context.get('num_cpus', '?')} CPUs, "
          f"load avg {context.get('load_avg', '?')}, "
          f"Google Benchmark library build: "
          f"{context.get('library_build_type', '?')}, "
          f"core_bench: {context.get('core_bench_build', '?')}")
    print()
    print("Medians over the repetitions; cv = coefficient of variation across "
          "them. Ratios are within this run. ref_* rows are reference points.")
    print()
    for group in GROUPS:
        print_group(group, order, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
