#!/usr/bin/env python3
"""reeve benchmark harness: reeve against daemontools, runit, s6, supervisord and pm2.

Run through bench/run, which builds and installs everything first. For each supervisor
it measures, with N identical services (bench/svc: sends "IDX PID MONO_NS" to our Unix
datagram socket the moment it starts, then pause()s):

  cold start   launching the supervisor -> all N services running (the latest
               CLOCK_MONOTONIC reading taken by the N services at the top of main)
  footprint    PSS/RSS of every supervisor process (not the services), smaps_rollup
  idle         context switches (all threads) and utime+stime of the supervisor
               processes over a window, no health checks
  restart      kill -9 of a service -> CLOCK_MONOTONIC at the top of main() of its
               successor; "paced": round robin over the N services, each up >= 1.1 s when
               killed (so the 1 s anti-thrash throttles of daemontools/runit/s6 never
               apply); "back-to-back": one service killed again as soon as its successor
               reports (shows those throttles), bounded by count and time

Process hygiene: the harness makes itself a child subreaper, so everything the
supervisors start (daemonized buddies, pm2's daemon, ...) stays among its descendants;
teardown SIGSTOPs then SIGKILLs exactly those descendants by pid, also on Ctrl-C.
"""

import argparse
import ctypes
import datetime
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PR_SET_CHILD_SUBREAPER = 36
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def now_ns():
    return time.monotonic_ns()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process table ----


def proc_table():
    """pid -> (ppid, state) for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read().decode("latin-1")
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        out[int(d)] = (int(rest[1]), rest[0])
    return out


def descendants(root=None):
    """Live (non-zombie) descendants of `root` (default: this process)."""
    root = root or os.getpid()
    table = proc_table()
    kids = {}
    for pid, (ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            todo.append(c)
            if table[c][1] != "Z":
                out.append(c)
    return out


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_all_descendants():
    """Freeze, then SIGKILL, every descendant by pid; bounded."""
    for _ in range(100):
        pids = descendants()
        if not pids:
            reap()
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
        time.sleep(0.02)
        reap()
    log("warning: some descendants survived teardown: %s" % descendants())


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("latin-1").strip()
    except OSError:
        return "?"


def mem_kb(pid):
    """(pss_kb, rss_kb) from smaps_rollup."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def cpu_busy():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def busy_pct(a, b):
    return round(100.0 * (b[0] - a[0]) / max(1, b[1] - a[1]), 1)


def ctx_switches(pid):
    """Voluntary + non-voluntary context switches summed over all threads."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read().decode("latin-1")
    except OSError:
        return None
    rest = s[s.rfind(")") + 2:].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (whole thread group)


# ---------------------------------------------------------------- statistics ----


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(ns_list):
    ms = [x / 1e6 for x in ns_list]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "median_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


# ---------------------------------------------------------------- the peers ----


class Peer:
    name = "?"
    # How the supervisor process(es) are labelled in the footprint breakdown.

    def __init__(self, h):
        self.h = h
        self.dir = os.path.join(h.work, self.name)

    def available(self):
        """None if runnable, else the reason it is skipped."""
        return None

    def prepare(self):
        """Write configuration for h.n services into a fresh self.dir."""
        raise NotImplementedError

    def launch(self):
        """Start the supervisor; return the Popen."""
        raise NotImplementedError

    def env(self):
        e = dict(os.environ)
        e["BENCH_SOCK"] = self.h.sock_path
        return e

    def popen(self, argv, env=None, cwd=None):
        out = open(os.path.join(self.dir, "supervisor.out"), "ab")
        return subprocess.Popen(argv, env=env or self.env(), cwd=cwd or self.dir,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def scandir_services(self, sub):
        base = os.path.join(self.dir, sub)
        os.makedirs(base)
        for i in range(self.h.n):
            d = os.path.join(base, "s%03d" % i)
            os.makedirs(d)
            os.symlink(self.h.svc, os.path.join(d, "run"))
        return base


def which(p):
    return shutil.which(p)


class Reeve(Peer):
    name = "reeve"

    def available(self):
        if not (os.access(self.h.reeve, os.X_OK) and os.access(self.h.buddy, os.X_OK)):
            return "reeve binaries not built"
        return None

    def prepare(self):
        os.makedirs(self.dir)
        for sub in ("data", "services", "rt"):
            os.makedirs(os.path.join(self.dir, sub))
        os.chmod(os.path.join(self.dir, "rt"), 0o700)
        for i in range(self.h.n):
            with open(os.path.join(self.dir, "services", "s%03d.toml" % i), "w") as f:
                f.write('command = [%s, %s, "%d"]\n[restart]\nbackoff_initial = "0s"\n'
                        % (json.dumps(self.h.svc), json.dumps(self.h.sock_path), i))

    def launch(self):
        e = self.env()
        e["XDG_RUNTIME_DIR"] = os.path.join(self.dir, "rt")
        return self.popen([self.h.reeve, "agent", "--allow-root",
                           "--data-dir", os.path.join(self.dir, "data"),
                           "--services-dir", os.path.join(self.dir, "services"),
                           "--buddy-path", self.h.buddy], env=e)

    def classify(self, pid, root):
        return "agent" if pid == root else "buddy"


class Daemontools(Peer):
    name = "daemontools"

    def available(self):
        return None if which("svscan") and which("supervise") else "svscan/supervise not installed (apt package daemontools)"

    def prepare(self):
        os.makedirs(self.dir)
        self.scan = self.scandir_services("service")

    def launch(self):
        return self.popen([which("svscan"), self.scan])


class Runit(Peer):
    name = "runit"

    def available(self):
        return None if which("runsvdir") and which("runsv") else "runsvdir/runsv not installed (apt package runit)"

    def prepare(self):
        os.makedirs(self.dir)
        self.scan = self.scandir_services("service")

    def launch(self):
        return self.popen([which("runsvdir"), self.scan])


class S6(Peer):
    """s6 with readiness notification (its fastest configuration): s6-supervise does not
    respawn ./run sooner than 1 s after the previous spawn unless the service declared
    itself ready (notification-fd) in the meantime."""
    name = "s6"
    readiness = True

    def available(self):
        return None if which("s6-svscan") and which("s6-supervise") else "s6-svscan not installed (apt package s6)"

    def prepare(self):
        os.makedirs(self.dir)
        self.scan = self.scandir_services("service")
        if self.readiness:
            for i in range(self.h.n):
                with open(os.path.join(self.scan, "s%03d" % i, "notification-fd"), "w") as f:
                    f.write("3\n")

    def launch(self):
        return self.popen([which("s6-svscan"), self.scan])


class S6Default(S6):
    """s6 as installed: no readiness notification, so every restart is throttled to 1 s
    after the previous spawn."""
    name = "s6-default"
    readiness = False


class Supervisord(Peer):
    name = "supervisord"

    def available(self):
        return None if which("supervisord") else "supervisord not installed (apt package supervisor)"

    def prepare(self):
        os.makedirs(os.path.join(self.dir, "logs"))
        self.conf = os.path.join(self.dir, "supervisord.conf")
        with open(self.conf, "w") as f:
            f.write("[supervisord]\nnodaemon=true\nuser=root\nloglevel=warn\n"
                    "logfile=%s/supervisord.log\npidfile=%s/supervisord.pid\n"
                    "childlogdir=%s/logs\n\n" % (self.dir, self.dir, self.dir))
            for i in range(self.h.n):
                # The fastest configuration: restart at once, count as started at once.
                f.write("[program:s%03d]\ncommand=%s %s %d\nautostart=true\n"
                        "autorestart=true\nstartsecs=0\nstartretries=1000000\n"
                        "stdout_logfile=NONE\nstderr_logfile=NONE\n\n"
                        % (i, self.h.svc, self.h.sock_path, i))

    def launch(self):
        return self.popen([which("supervisord"), "-c", self.conf])


class Pm2(Peer):
    name = "pm2"

    def available(self):
        if not os.access(self.h.pm2, os.X_OK):
            return "pm2 not installed (npm install --prefix bench/.node pm2 failed or was skipped)"
        return None

    def env(self):
        e = super().env()
        e["PM2_HOME"] = os.path.join(self.dir, "home")
        e["PM2_DISCRETE_MODE"] = "true"
        return e

    def prepare(self):
        os.makedirs(os.path.join(self.dir, "home"))
        self.conf = os.path.join(self.dir, "ecosystem.config.js")
        apps = []
        for i in range(self.h.n):
            apps.append({
                "name": "s%03d" % i,
                "script": self.h.svc,
                "args": [self.h.sock_path, str(i)],
                "interpreter": "none",
                "exec_mode": "fork",
                "autorestart": True,
                # The fastest configuration: no delay, no "unstable restart" limit.
                "restart_delay": 0,
                "min_uptime": 100,  # pm2 7 silently starts nothing below 100
                "max_restarts": 1000000000,
                "out_file": "/dev/null",
                "error_file": "/dev/null",
                "pmx": False,
                "vizion": False,
                "autostart": True,
            })
        with open(self.conf, "w") as f:
            f.write("module.exports = { apps: %s };\n" % json.dumps(apps, indent=1))

    def launch(self):
        # The CLI starts the daemon ("God"), hands it the apps and exits.
        return self.popen([self.h.pm2, "start", self.conf])


PEERS = [Reeve, Daemontools, Runit, S6, S6Default, Supervisord, Pm2]


# ---------------------------------------------------------------- the harness ----


class Harness:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.n = args.services
        self.svc = os.path.abspath(args.svc)
        self.reeve = os.path.abspath(args.reeve)
        self.buddy = os.path.abspath(args.buddy)
        self.pm2 = os.path.abspath(args.pm2)
        self.work = tempfile.mkdtemp(prefix="reeve-bench.", dir=args.tmp)
        self.sock_path = os.path.join(self.work, "h.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)
        self.cur = {}    # idx -> pid
        self.start = {}  # idx -> service's monotonic ns at start

    # -- datagrams --

    def recv(self, timeout_s):
        """Wait up to timeout_s for datagrams; returns a list of (idx, pid, ns, arrival_ns)."""
        out = []
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout_s))
        if not r:
            return out
        while True:
            try:
                data = self.sock.recv(256)
            except BlockingIOError:
                break
            t = now_ns()
            try:
                a, b, c = data.split()
                out.append((int(a), int(b), int(c), t))
            except ValueError:
                continue
        for idx, pid, ns, _ in out:
            self.cur[idx] = pid
            self.start[idx] = ns
        return out

    def drain(self):
        self.recv(0)

    # -- one peer --

    def run_peer(self, cls):
        peer = cls(self)
        why = peer.available()
        if why:
            log(f"[{peer.name}] SKIPPED: {why}")
            return {"skipped": why}
        res = {}
        reps = 1 if self.quick else 3
        colds = []
        for rep in range(reps):
            last = rep == reps - 1
            if os.path.exists(peer.dir):
                shutil.rmtree(peer.dir, ignore_errors=True)
            peer.prepare()
            # Configuration written well before the start, as at boot (runsvdir, for one,
            # does not trust a directory modified within the current second).
            time.sleep(1.1)
            self.cur.clear()
            self.start.clear()
            self.drain()
            m0 = cpu_busy()
            t0 = now_ns()
            proc = peer.launch()
            seen_ns, seen_arr = {}, {}
            deadline = time.monotonic() + 60
            while len(seen_ns) < self.n and time.monotonic() < deadline:
                for idx, pid, ns, arr in self.recv(0.5):
                    if idx not in seen_ns:
                        seen_ns[idx] = ns
                        seen_arr[idx] = arr
                reap()
            if len(seen_ns) < self.n:
                log(f"[{peer.name}] only {len(seen_ns)}/{self.n} services came up in 60 s")
                res["error"] = f"only {len(seen_ns)}/{self.n} services came up in 60 s"
                kill_all_descendants()
                return res
            ts = sorted((v - t0) / 1e6 for v in seen_ns.values())
            cold = {"running_ms": round(ts[-1], 2),
                    "last_datagram_ms": round((max(seen_arr.values()) - t0) / 1e6, 2),
                    # When the 1st, 10th, 50th, 90th service started: serial or parallel?
                    "first_ms": round(ts[0], 2), "p10_ms": round(ts[len(ts) // 10], 2),
                    "p50_ms": round(ts[len(ts) // 2], 2), "p90_ms": round(ts[len(ts) * 9 // 10], 2)}
            cold["machine_busy_pct"] = busy_pct(m0, cpu_busy())
            colds.append(cold)
            log(f"[{peer.name}] cold start {rep + 1}/{reps}: {cold['running_ms']} ms to all {self.n} running")
            if not last:
                kill_all_descendants()
                self.drain()
        res["cold_start_runs"] = colds
        res["cold_start_ms"] = round(statistics.median(c["running_ms"] for c in colds), 2)
        root = proc.pid

        # Settle: past one-shot start-up timers (e.g. reeve's 10 s healthy window).
        settle = self.args.settle
        end = time.monotonic() + settle
        while time.monotonic() < end:
            self.recv(min(0.5, max(0.0, end - time.monotonic())))
            reap()

        services = set(self.cur.values())
        sup = [p for p in descendants() if p not in services]
        res["supervisor_processes"] = self.describe(sup, root, peer)

        # Footprint.
        mem = {p: mem_kb(p) for p in sup}
        res["footprint"] = {
            "pss_total_kb": sum(m[0] for m in mem.values()),
            "rss_total_kb": sum(m[1] for m in mem.values()),
            "processes": len(sup),
        }
        if isinstance(peer, Reeve):
            buddies = [p for p in sup if comm(p).startswith("reeve-buddy")]
            agent = [p for p in sup if p not in buddies]
            bp = [mem[p][0] for p in buddies]
            res["footprint"]["agent_rss_kb"] = sum(mem[p][1] for p in agent)
            res["footprint"]["agent_pss_kb"] = sum(mem[p][0] for p in agent)
            res["footprint"]["buddies"] = len(buddies)
            if bp:
                res["footprint"]["buddy_pss_kb_mean"] = round(statistics.fmean(bp), 1)
                res["footprint"]["buddy_pss_kb_max"] = max(bp)
                res["footprint"]["buddy_rss_kb_mean"] = round(statistics.fmean(mem[p][1] for p in buddies), 1)
        log(f"[{peer.name}] footprint: {len(sup)} processes, PSS {res['footprint']['pss_total_kb'] / 1024:.1f} MB")

        # Idle.
        window = self.args.idle
        m0 = cpu_busy()
        c0 = {p: ctx_switches(p) for p in sup}
        u0 = {p: cpu_ticks(p) for p in sup}
        t0 = time.monotonic()
        while time.monotonic() < t0 + window:
            got = self.recv(min(0.5, max(0.0, t0 + window - time.monotonic())))
            if got:
                log(f"[{peer.name}] note: {len(got)} service start(s) during the idle window")
            reap()
        dt = time.monotonic() - t0
        c1 = {p: ctx_switches(p) for p in sup}
        u1 = {p: cpu_ticks(p) for p in sup}
        gone = [p for p in sup if c1[p] is None or c0[p] is None]
        wake = sum(c1[p] - c0[p] for p in sup if p not in gone)
        ticks = sum(u1[p] - u0[p] for p in sup if p not in gone)
        per_proc = {str(p): c1[p] - c0[p] for p in sup if p not in gone and c1[p] - c0[p] > 0}
        res["idle"] = {
            "window_s": round(dt, 2),
            "wakeups_per_s": round(wake / dt, 4),
            "cpu_s_per_min": round(ticks / CLK_TCK * 60.0 / dt, 4),
            "context_switches": wake,
            "cpu_ticks": ticks,
            "waking_processes": {k: {"ctxsw": v, "comm": comm(int(k))} for k, v in per_proc.items()},
            "vanished_processes": len(gone),
            "machine_busy_pct": busy_pct(m0, cpu_busy()),
        }
        log(f"[{peer.name}] idle: {res['idle']['wakeups_per_s']} wake-ups/s, {res['idle']['cpu_s_per_min']} CPU s/min")

        # Restart latency, paced round robin.
        m0 = cpu_busy()
        res["restart_paced"] = self.restarts_paced(peer)
        res["restart_paced"]["machine_busy_pct"] = busy_pct(m0, cpu_busy())
        log(f"[{peer.name}] restart (paced): {res['restart_paced']}")
        res["restart_back_to_back"] = self.restarts_b2b(peer)
        log(f"[{peer.name}] restart (back-to-back): {res['restart_back_to_back']}")

        kill_all_descendants()
        self.drain()
        shutil.rmtree(peer.dir, ignore_errors=True)
        return res

    def describe(self, pids, root, peer):
        names = {}
        for p in pids:
            c = comm(p)
            names[c] = names.get(c, 0) + 1
        return names

    def kill_and_wait(self, idx, timeout_s):
        """SIGKILL service idx; return latency ns to its successor's start, or None."""
        old = self.cur[idx]
        t0 = now_ns()
        try:
            os.kill(old, signal.SIGKILL)
        except ProcessLookupError:
            return None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i, pid, ns, _ in self.recv(deadline - time.monotonic()):
                if i == idx and pid != old:
                    return ns - t0
        return None

    def restarts_paced(self, peer):
        """Round robin over all services, one kill at a time (the next kill only after the
        successor of the previous one reported), each service up >= 1.1 s when killed.
        Bounded by a time cap (a 1 s-tick supervisor does not reach the count)."""
        target = self.args.kills
        min_up_ns = 1_100_000_000
        cap = time.monotonic() + self.args.restart_cap
        lat, lost = [], 0
        idx = 0
        while len(lat) + lost < target and time.monotonic() < cap:
            up_at = self.start.get(idx, 0) + min_up_ns
            while now_ns() < up_at:
                self.recv((up_at - now_ns()) / 1e9)
            d = self.kill_and_wait(idx, 10.0)
            if d is None:
                lost += 1
                if lost > 5:
                    break
            else:
                lat.append(d)
            idx = (idx + 1) % self.n
            reap()
        s = summary_ms(lat)
        s["kills"] = len(lat) + lost
        s["lost"] = lost
        if len(lat) + lost < target:
            s["note"] = f"stopped by the {self.args.restart_cap:.0f} s cap after {len(lat) + lost} kills"
        return s

    def restarts_b2b(self, peer):
        """One service, killed again as soon as its successor reports."""
        target = self.args.b2b_kills
        cap = time.monotonic() + self.args.b2b_cap
        lat, lost = [], 0
        idx = 0
        while len(lat) + lost < target and time.monotonic() < cap:
            d = self.kill_and_wait(idx, min(10.0, max(2.5, cap - time.monotonic() + 2.5)))
            if d is None:
                lost += 1
                if lost > 3:
                    break
            else:
                lat.append(d)
            reap()
        s = summary_ms(lat)
        s["lost"] = lost
        if len(lat) + lost < target:
            s["note"] = f"stopped by the {self.args.b2b_cap:.0f} s cap"
        return s

    def close(self):
        kill_all_descendants()
        try:
            self.sock.close()
        except OSError:
            pass
        shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------- report ----


TARGETS = {
    "restart_median_ms": 2.0,
    "restart_p99_ms": 5.0,
    "agent_rss_kb": 8 * 1024,
    "buddy_pss_kb": 150,
    "wakeups_per_s": 0.02,
    "cpu_s_per_min": 0.01,
    "cold_start_ms": 50.0,
}


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(result):
    n = result["params"]["services"]
    head = ["supervisor", "restart med/p99 ms (paced)", "kills", "back-to-back med/p99 ms",
            f"PSS {n} svc MB", f"cold start {n} ms", "idle wake-ups/s", "idle CPU s/min"]
    rows = []
    for name, r in result["peers"].items():
        if "skipped" in r or "error" in r:
            rows.append([name, "skipped: " + r.get("skipped", r.get("error", "")), "", "", "", "", "", ""])
            continue
        rp, rb = r["restart_paced"], r["restart_back_to_back"]
        rows.append([
            name,
            f"{fmt(rp.get('median_ms'), 2)} / {fmt(rp.get('p99_ms'), 2)}",
            f"{rp.get('kills')}" + (f" ({rp['lost']} lost)" if rp.get("lost") else "")
            + (" (capped)" if rp.get("note") else ""),
            f"{fmt(rb.get('median_ms'), 2)} / {fmt(rb.get('p99_ms'), 2)} (n={rb.get('n')})",
            fmt(r["footprint"]["pss_total_kb"] / 1024, 1),
            fmt(r["cold_start_ms"], 1),
            fmt(r["idle"]["wakeups_per_s"], 3),
            fmt(r["idle"]["cpu_s_per_min"], 4),
        ])
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(head)) + " |",
             "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(row)) + " |")
    r = result["peers"].get("reeve", {})
    if "footprint" in r:
        f = r["footprint"]
        lines.append("")
        lines.append(f"reeve detail: agent RSS {f['agent_rss_kb'] / 1024:.2f} MB (target <= 8 MB), "
                     f"per buddy PSS mean {f.get('buddy_pss_kb_mean')} KB / max {f.get('buddy_pss_kb_max')} KB "
                     f"(target <= 150 KB), buddy RSS mean {f.get('buddy_rss_kb_mean')} KB")
        lines.append("targets: restart median <= 2 ms, p99 <= 5 ms; idle <= 0.02 wake-ups/s, "
                     "<= 0.01 CPU s/min; cold start <= 50 ms")
        lines.append("reeve misses: " + (", ".join(misses(r, result["peers"])) or "none"))
        c = r["cold_start_runs"][-1]
        if "first_ms" in c:
            lines.append(f"reeve cold start spread (last launch): first service {c['first_ms']} ms, "
                         f"10th {c['p10_ms']}, 50th {c['p50_ms']}, 90th {c['p90_ms']}, 100th {c['running_ms']} ms")
        busy = [(k, v["restart_paced"].get("machine_busy_pct")) for k, v in result["peers"].items()
                if "restart_paced" in v and v["restart_paced"].get("machine_busy_pct") is not None]
        if busy:
            lines.append("whole-machine CPU busy during the paced restarts (other load shows here): "
                         + ", ".join(f"{k} {v}%" for k, v in busy))
    return "\n".join(lines)


def misses(r, peers=None):
    out = []
    rp = r["restart_paced"]
    for name, o in (peers or {}).items():
        op = o.get("restart_paced", {})
        if name == "reeve" or op.get("median_ms") is None or rp.get("median_ms") is None:
            continue
        if op["median_ms"] <= rp["median_ms"]:
            out.append(f"restart median {rp['median_ms']} ms not below {name}'s {op['median_ms']}")
        if op["p99_ms"] <= rp["p99_ms"]:
            out.append(f"restart p99 {rp['p99_ms']} ms not below {name}'s {op['p99_ms']}")
    if rp.get("median_ms") is None or rp["median_ms"] > TARGETS["restart_median_ms"]:
        out.append(f"restart median {rp.get('median_ms')} ms > 2")
    if rp.get("p99_ms") is None or rp["p99_ms"] > TARGETS["restart_p99_ms"]:
        out.append(f"restart p99 {rp.get('p99_ms')} ms > 5")
    f = r["footprint"]
    if f["agent_rss_kb"] > TARGETS["agent_rss_kb"]:
        out.append(f"agent RSS {f['agent_rss_kb'] / 1024:.2f} MB > 8")
    if f.get("buddy_pss_kb_mean", 0) > TARGETS["buddy_pss_kb"]:
        out.append(f"buddy PSS {f['buddy_pss_kb_mean']} KB > 150")
    if r["idle"]["wakeups_per_s"] > TARGETS["wakeups_per_s"]:
        out.append(f"idle {r['idle']['wakeups_per_s']} wake-ups/s > 0.02")
    if r["idle"]["cpu_s_per_min"] > TARGETS["cpu_s_per_min"]:
        out.append(f"idle {r['idle']['cpu_s_per_min']} CPU s/min > 0.01")
    if r["cold_start_ms"] > TARGETS["cold_start_ms"]:
        out.append(f"cold start {r['cold_start_ms']} ms > 50")
    return out


# ---------------------------------------------------------------- main ----


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--svc", required=True)
    ap.add_argument("--reeve", required=True)
    ap.add_argument("--buddy", required=True)
    ap.add_argument("--pm2", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(c.name for c in PEERS))
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--notes", default="", help="JSON object of install notes to record")
    args = ap.parse_args()
    args.kills = 100 if args.quick else 1000
    args.b2b_kills = 100 if args.quick else 300
    args.b2b_cap = 5.0 if args.quick else 12.0
    args.restart_cap = 40.0 if args.quick else 150.0
    args.idle = 15.0 if args.quick else 60.0
    args.settle = 11.0

    if True:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log("warning: could not become a child subreaper; daemonized processes may escape teardown")

    h = Harness(args)

    def on_signal(signum, _frame):
        log(f"signal {signum}: cleaning up")
        h.close()
        sys.exit(130)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    only = [x for x in args.only.split(",") if x]
    result = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "model": cpu_model(),
            "mem_total_kb": mem_total(),
        },
        "params": {"services": args.services, "kills": args.kills, "b2b_kills": args.b2b_kills,
                   "idle_window_s": args.idle, "settle_s": args.settle,
                   "restart_min_uptime_s": 1.1},
        "notes": json.loads(args.notes) if args.notes else {},
        "versions": versions(args),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "targets": TARGETS,
        "peers": {},
    }
    try:
        for cls in PEERS:
            if only and cls.name not in only:
                continue
            log(f"=== {cls.name} ===")
            try:
                result["peers"][cls.name] = h.run_peer(cls)
            except Exception as e:  # one broken peer must not lose the others
                import traceback
                traceback.print_exc()
                result["peers"][cls.name] = {"error": f"{type(e).__name__}: {e}"}
                kill_all_descendants()
    finally:
        h.close()
    result["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    if "reeve" in result["peers"] and "footprint" in result["peers"]["reeve"]:
        result["reeve_misses"] = misses(result["peers"]["reeve"], result["peers"])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print()
    print(f"reeve benchmark, {result['mode']} run, {result['date']}, "
          f"{result['machine']['cpus']} CPUs ({result['machine']['model']}), kernel {result['machine']['kernel']}")
    print(table(result))
    print()
    print(f"JSON: {args.out}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def mem_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                return int(line.split()[1])
    return None


def versions(args):
    v = {}

    def q(pkg):
        try:
            return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                                  text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    for pkg in ("daemontools", "runit", "s6", "supervisor"):
        v[pkg] = q(pkg)
    try:
        pj = os.path.join(os.path.dirname(os.path.realpath(args.pm2)), "..", "package.json")
        with open(pj) as f:
            v["pm2"] = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        v["pm2"] = None
    try:
        v["reeve-buddy"] = subprocess.run([args.buddy, "--version"], capture_output=True, text=True,
                                          timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        v["reeve-buddy"] = None
    return v


if __name__ == "__main__":
    main()
