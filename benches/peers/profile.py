#!/usr/bin/env python3
"""Profile one gateway under one workload of the side-by-side harness.

    python3 benches/peers/profile.py --target meshgate --workload A [--perf] [--strace]

Starts the backend and the target exactly as harness.py does (same PKI, pinning and
configuration), runs the workload once, and prints req/s with user and kernel CPU µs per
request. `--perf` records the target with `perf record` (cpu-clock, DWARF call graphs) and
prints where the time goes by shared object and by crate; `--strace` counts system calls per
request (strace slows the target down: use it for counts, not rates). Needs what run.sh
installs, plus `perf` and `strace` for those options.
"""

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402


def crate_split(perf_data: Path, top=16):
    """Self time of user-space symbols, summed by crate (the first path segment)."""
    out = subprocess.run(["perf", "report", "-i", str(perf_data), "--no-children", "--sort", "sym", "-g", "none"],
                         capture_output=True, text=True).stdout
    crates = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[\.\]\s+(.*)", line)
        if m:
            crates[re.split(r"::|\s", m.group(2).lstrip("<"))[0]] += float(m.group(1))
    return crates.most_common(top)


def dso_split(perf_data: Path):
    out = subprocess.run(["perf", "report", "-i", str(perf_data), "--no-children", "--sort", "dso", "-g", "none"],
                         capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("#")][:6]


def syscall_counts(path: Path, requests: int):
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
            rows.append((parts[-1], int(parts[3]) / max(requests, 1)))
    return sorted(rows, key=lambda r: -r[1])[:10]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="meshgate", choices=list(h.PORTS))
    parser.add_argument("--workload", default="A", choices=[*h.WORKLOADS, *h.MESHED_WORKLOADS, *h.L5D_WORKLOADS])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--work", default="/tmp/meshgate-profile")
    parser.add_argument("--meshgate", default=str(Path(__file__).resolve().parents[2] / "target/release/meshgate"))
    parser.add_argument("--load", default=str(Path(__file__).resolve().parents[2] / "target/release/l5d-load"))
    parser.add_argument("--workers", type=int, default=1, help="meshgate's MESHGATE_WORKERS (2: on both CPUs)")
    parser.add_argument("--envoy", default="/tmp/meshgate-bench/envoy/envoy/_bin/envoy")
    parser.add_argument("--perf", action="store_true")
    parser.add_argument("--strace", action="store_true")
    args = parser.parse_args()

    d = Path(args.work) / "run"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    os.sched_setaffinity(0, {h.LOAD_CORE})
    h.make_pki(d)
    # As in the harness: resumption off on every target except for C-resumed.
    argv, env = h.commands(d, args, resume=args.workload in h.RESUMED)[args.target]
    if args.target == "meshgate":
        env = {**env, "MESHGATE_WORKERS": str(args.workers)}
    backend = h.Proc("backend", ["nginx", "-p", str(d), "-e", f"{d}/backend.err", "-c", f"{d}/backend.conf"],
                     dict(os.environ), h.LOAD_CORE, d / "backend.log")
    pod = None
    if args.workload in h.MESHED_WORKLOADS or args.workload == "H":
        pod = h.Proc("pod", ["nginx", "-p", str(d), "-e", f"{d}/pod.err", "-c", f"{d}/pod.conf"],
                     dict(os.environ), h.LOAD_CORE, d / "pod.log")
    core = h.GATEWAY_CORE if args.workers == 1 else "0,1"
    target = h.Proc(args.target, argv, env, core, d / "target.log")
    tracer = None
    try:
        h.wait_port(h.BACKEND_H1, backend)
        if pod:
            h.wait_port(h.POD_PORT, pod)
        h.wait_port(h.PORTS[args.target], target)
        pids = ",".join(str(p) for p in target.pids()[1:] or target.pids())
        perf_data, strace_out = d / "perf.data", d / "strace.txt"
        if args.perf:
            tracer = subprocess.Popen(["perf", "record", "-F", "2000", "-g", "--call-graph", "dwarf,16384",
                                       "-o", str(perf_data), "-p", pids],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif args.strace:
            tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(strace_out),
                                       *[x for p in pids.split(",") for x in ("-p", p)]],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args.workload in h.L5D_WORKLOADS:
            sample = h.measure_l5d(d, target, h.PORTS[args.target], args.workload, args.seconds, args.load)
        else:
            sample = h.measure(d, target, h.PORTS[args.target], args.workload, args.seconds)
        if tracer:
            tracer.send_signal(2)
            tracer.wait()
            tracer = None
        print(f"{args.target} {args.workload}: {sample['rps']:,.0f} req/s, CPU {sample['cpu_us']:.1f} µs/req "
              f"(kernel {sample['sys_us']:.1f}, user {sample['cpu_us'] - sample['sys_us']:.1f}), "
              f"p50 {sample['p50']:.3f} ms, p99 {sample['p99']:.3f} ms, {sample['mib_s']:.0f} MiB/s"
              + (f", client {sample['client_cpu_us']:.1f} µs/response" if "client_cpu_us" in sample else ""))
        if args.perf:
            print("\nby shared object:")
            print("\n".join(f"  {row}" for row in dso_split(perf_data)))
            print("\nuser space by crate (% of all samples):")
            print("\n".join(f"  {pct:6.2f}  {name}" for name, pct in crate_split(perf_data)))
            print(f"\nfull profile: perf report -i {perf_data}")
        if args.strace:
            print("\nsystem calls per request:")
            print("\n".join(f"  {name:16} {n:.2f}" for name, n in syscall_counts(strace_out, sample["ok"])))
    finally:
        if tracer:
            tracer.kill()
        target.stop()
        if pod:
            pod.stop()
        backend.stop()


if __name__ == "__main__":
    main()
