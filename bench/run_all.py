"""dualnet vs PyTorch CPU on the rows of issues 3 and 11: prints a markdown table, writes JSON.

    python bench/run_all.py                  # 5 rounds; also `dualnet bench`
    python bench/run_all.py --rounds 3 --repeat 5 --out bench/results/latest.json

Method: every round times each row in a fresh worker process per system (bench/worker.py),
the two systems back to back in alternating order, so that numpy's BLAS threads and torch's
OpenMP threads never share a process and both systems see the same machine noise. Each
worker imports numpy and matplotlib before dualnet or torch, as users' notebooks and
scripts do. Each round also times the batch-50
ThreeLayerConvNet step twice more: in a process that imports dualnet first (the import
order must not matter), and inside a Jupyter kernel for each system (nbclient executing
bench/train_step.ipynb; skipped without nbclient and ipykernel, the `bench` extra).
A worker reports each workload's median iteration time; the table gives the median over
rounds with the min-max range, the ratio dualnet time / PyTorch time per row (below 1:
dualnet is faster), and for the rows issue 11 sets a target on, the largest ratio that meets
it and whether this run did. PyTorch is the optional `bench` extra
(`pip install -e '.[bench]'`); without it only dualnet is timed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import workloads

HERE = Path(__file__).resolve().parent
SYSTEMS = ("dualnet", "torch")


def _worker(system, repeat, *options):
    cmd = [sys.executable, str(HERE / "worker.py"), system, "--repeat", str(repeat), *options]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode:
        raise SystemExit(f"bench: the {system} worker {' '.join(options)} failed:\n"
                         f"{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


ROW = workloads.IMPORT_ORDER_ROW
#: Rows timed by extra workers: (row, system -> worker options, what the row's name adds).
DUALNET_FIRST = workloads.Workload(f"{ROW}, dualnet imported first",
                                   items=workloads.BY_NAME[ROW].items)
JUPYTER = workloads.Workload(f"{ROW}, in a Jupyter kernel", items=workloads.BY_NAME[ROW].items,
                             target=workloads.BY_NAME[ROW].target)


def _extra_jobs(systems, jupyter):
    """(system, worker options, row name the result is stored under) for the extra rows."""
    jobs = [("dualnet", ("--dualnet-first", "--only", ROW), DUALNET_FIRST.name)]
    if jupyter:
        jobs += [(system, ("--jupyter", "--only", ROW), JUPYTER.name) for system in systems]
    return jobs


def _jupyter_missing():
    """Why the Jupyter rows cannot run here, or None."""
    for module in ("nbclient", "nbformat", "ipykernel"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[bench]')"
    return None


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _stats(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "samples": samples}


def _cell(work, stats):
    """'12.3 ms (11.9-13.0)', or images/s for whole-network rows (higher is better)."""
    if stats is None:
        return "-"
    if work.items:
        rate = [work.items / stats[k] for k in ("median", "max", "min")]
        return f"{rate[0]:,.0f} img/s ({rate[1]:,.0f}-{rate[2]:,.0f})"
    ms = [stats[k] * 1e3 for k in ("median", "min", "max")]
    digits = 0 if ms[0] >= 1000 else 2
    return f"{ms[0]:.{digits}f} ms ({ms[1]:.{digits}f}-{ms[2]:.{digits}f})"


def _notes(rows, by_name):
    """Per-row remarks computed from the same run: GFLOP/s, speedups, the import order."""
    gemm = next(w for w in workloads.WORKLOADS if w.name.startswith("GEMM"))
    gemm_rate = gemm.flops / by_name[gemm.name]["dualnet"]["median"]
    for work, row in rows:
        notes = []
        t = row["dualnet"]["median"] if row["dualnet"] else None
        if work.flops and t:
            gflops = work.flops / t / 1e9
            notes.append(f"{gflops:.0f} GFLOP/s" if work is gemm else
                         f"{gflops:.0f} GFLOP/s = {100 * work.flops / t / gemm_rate:.0f}% "
                         "of numpy GEMM")
        naive = by_name.get(workloads.NAIVE_CONV.name)
        naive_timed = naive and naive["dualnet"]  # empty with --no-naive
        if work.name.startswith("conv (a)") and work is not workloads.NAIVE_CONV and naive_timed:
            notes.append(f"{naive['dualnet']['median'] / t:.0f}x faster than naive")
        if work.name.startswith("batchnorm_backward_alt") and t:
            graph = by_name["batchnorm_backward (100, 500) f64"]["dualnet"]["median"]
            notes.append(f"{graph / t:.2f}x faster than batchnorm_backward")
        if work is DUALNET_FIRST and t:
            numpy_first = by_name[ROW]["dualnet"]["median"]
            notes.append(f"time {t / numpy_first:.2f}x the numpy-first row's")
        row["note"] = "; ".join(notes)


def _target_cell(row):
    target = row.get("target")
    if target is None:
        return ""
    if "ratio" not in row:
        return f"<= {target:.2f}"
    return f"<= {target:.2f}: {'met' if row['ratio'] <= target else 'NOT met'}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=7,
                        help="timed iterations per worker (at least; fast rows run more)")
    parser.add_argument("--no-naive", action="store_true",
                        help="skip timing the naive convolution (about 10 s)")
    parser.add_argument("--no-jupyter", action="store_true",
                        help="skip the rows timed inside a Jupyter kernel")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args(argv)

    systems = [s for s in SYSTEMS if s != "torch" or importlib.util.find_spec("torch")]
    if "torch" not in systems:
        print("bench: PyTorch is not installed (pip install -e '.[bench]'); timing dualnet "
              "only", file=sys.stderr)
    jupyter_missing = "--no-jupyter given" if args.no_jupyter else _jupyter_missing()
    if jupyter_missing:
        print(f"bench: not timing in a Jupyter kernel: {jupyter_missing}", file=sys.stderr)
    samples = {}  # (workload, system) -> per-round medians
    info = {}
    load_before = os.getloadavg()
    for r in range(args.rounds):
        jobs = []
        for i, work in enumerate(workloads.WORKLOADS):  # each row: its systems back to back
            order = [s for s in systems if s in work.build]
            jobs += [(s, ("--only", work.name), None) for s in (order if (r + i) % 2 == 0
                                                                 else order[::-1])]
        jobs += _extra_jobs(systems, not jupyter_missing)
        if r == 0 and not args.no_naive:
            jobs.append(("dualnet", ("--naive", "--only", workloads.NAIVE_CONV.name), None))
        for system, options, row_name in jobs:
            result = _worker(system, args.repeat, *options)
            if row_name is None:
                info[system] = result["info"]
            for name, seconds in result["times"].items():
                samples.setdefault((row_name or name, system), []).append(seconds)
        print(f"bench: round {r + 1}/{args.rounds} done", file=sys.stderr)

    every = [*workloads.WORKLOADS, DUALNET_FIRST, JUPYTER, workloads.NAIVE_CONV]
    rows, by_name = [], {}
    for work in every:
        row = {"name": work.name, "unit": "images/s" if work.items else "seconds",
               "items": work.items, "target": work.target}
        for system in SYSTEMS:
            got = samples.get((work.name, system))
            row[system] = _stats(got) if got else None
        if row["dualnet"] and row["torch"]:
            row["ratio"] = row["dualnet"]["median"] / row["torch"]["median"]
        by_name[work.name] = row
        if row["dualnet"]:
            rows.append((work, row))
    _notes(rows, by_name)

    machine = {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version(), "load_average_before": load_before,
               "load_average_after": os.getloadavg(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    report = {"machine": machine, "systems": info, "rounds": args.rounds,
              "repeat": args.repeat, "rows": [row for _, row in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")

    print(f"\n{machine['cpu']}, {machine['cores']} cores, load average "
          f"{load_before[0]:.1f} -> {machine['load_average_after'][0]:.1f}; "
          f"median of {args.rounds} rounds (min-max)")
    if "dualnet" in info:
        print(f"numpy {info['dualnet']['numpy']}, BLAS {info['dualnet']['blas']}")
    if "torch" in info:
        print(f"PyTorch {info['torch']['torch']}, {info['torch']['threads']} threads, "
              f"{info['torch']['cpu_capability']} kernels")
    print()
    print("| workload | dualnet | PyTorch | dualnet/PyTorch time | target | note |")
    print("|---|---|---|---|---|---|")
    for work, row in rows:
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
        print(f"| {work.name} | {_cell(work, row['dualnet'])} | {_cell(work, row['torch'])} "
              f"| {ratio} | {_target_cell(row)} | {row['note']} |")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
