#!/usr/bin/env python3
"""Cold start of reeve alone, repeated: where the time and the CPU go.

    bench/coldstart.py --reeve target/release/reeve --buddy target/release/reeve-buddy \
        --svc SVC [--reps 5] [--services 100] [--smaps]

Uses bench/harness.py's reeve set-up and timing (launch -> the latest service's own
CLOCK_MONOTONIC at the top of main), then, per launch, the CPU time each process had
used once all services ran (/proc/PID/schedstat, nanoseconds): the agent, the buddies
summed, the services summed. With --smaps, after the last launch it waits 5 s and prints
the buddies' mean PSS and the agent's RSS by mapping (largest first). Kills only what it started (its descendants,
by pid), like the harness.
"""

import argparse
import ctypes
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def sched_ns(pid):
    """CPU time of every thread of pid, ns (0 if gone)."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
    except OSError:
        pass
    return total


def smaps(pid):
    """[(rss_kb, pss_kb, name)] per mapping, merged by name."""
    out = {}
    name = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts[0]) > 8 and ":" not in parts[0]:
                perms = parts[1]
                name = (parts[5] if len(parts) > 5 else "[anon]") + " " + perms
                out.setdefault(name, [0, 0])
            elif parts[0] == "Rss:":
                out[name][0] += int(parts[1])
            elif parts[0] == "Pss:":
                out[name][1] += int(parts[1])
    return sorted(((v[0], v[1], k) for k, v in out.items()), reverse=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reeve", required=True)
    ap.add_argument("--buddy", required=True)
    ap.add_argument("--svc", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--smaps", action="store_true")
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    args.pm2 = "/nonexistent"
    args.quick = True
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(H.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    h = H.Harness(args)
    peer = H.Reeve(h)
    rows = []
    try:
        for rep in range(args.reps):
            if os.path.exists(peer.dir):
                shutil.rmtree(peer.dir, ignore_errors=True)
            peer.prepare()
            time.sleep(1.1)
            h.drain()
            m0 = H.cpu_busy()
            t0 = H.now_ns()
            proc = peer.launch()
            seen = {}
            deadline = time.monotonic() + 60
            while len(seen) < h.n and time.monotonic() < deadline:
                for idx, pid, ns, _ in h.recv(0.5):
                    seen.setdefault(idx, (pid, ns))
                H.reap()
            busy = H.busy_pct(m0, H.cpu_busy())
            services = {p for p, _ in seen.values()}
            sup = [p for p in H.descendants() if p not in services]
            agent = sched_ns(proc.pid)
            buddies = sum(sched_ns(p) for p in sup if p != proc.pid)
            svcs = sum(sched_ns(p) for p in services)
            ts = sorted((ns - t0) / 1e6 for _, ns in seen.values())
            if len(ts) < h.n:
                print(f"rep {rep + 1}: only {len(ts)}/{h.n} services came up", flush=True)
                H.kill_all_descendants()
                continue
            row = {"all_ms": ts[-1], "first_ms": ts[0], "p50_ms": ts[len(ts) // 2],
                   "p90_ms": ts[len(ts) * 9 // 10], "agent_cpu_ms": agent / 1e6,
                   "buddies_cpu_ms": buddies / 1e6, "services_cpu_ms": svcs / 1e6,
                   "machine_busy_pct": busy}
            rows.append(row)
            print("rep %d: all %.1f ms (first %.1f, p50 %.1f, p90 %.1f); CPU: agent %.1f ms, "
                  "buddies %.1f ms, services %.1f ms; machine busy %s %%"
                  % (rep + 1, row["all_ms"], row["first_ms"], row["p50_ms"], row["p90_ms"],
                     row["agent_cpu_ms"], row["buddies_cpu_ms"], row["services_cpu_ms"], busy),
                  flush=True)
            if rep == args.reps - 1 and args.smaps:
                time.sleep(5)
                bp = [H.mem_kb(p)[0] for p in sup if p != proc.pid]
                if bp:
                    print("buddies: %d, PSS mean %.1f kB" % (len(bp), statistics.fmean(bp)))
                m = smaps(proc.pid)
                print("agent RSS %d kB, PSS %d kB" % (sum(r for r, _, _ in m), sum(p for _, p, _ in m)))
                for r, p, name in m[:25]:
                    print("  %6d kB rss %6d kB pss  %s" % (r, p, name))
            H.kill_all_descendants()
            h.drain()
        if rows:
            print("median of %d: all %.1f ms, agent CPU %.1f ms, buddies CPU %.1f ms"
                  % (len(rows), statistics.median(r["all_ms"] for r in rows),
                     statistics.median(r["agent_cpu_ms"] for r in rows),
                     statistics.median(r["buddies_cpu_ms"] for r in rows)))
    finally:
        h.close()


if __name__ == "__main__":
    main()
