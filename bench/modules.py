#!/usr/bin/env python3
"""Module benchmarks (issue 4): install + start of a 50 MB module from a loopback registry
(wall time, the agent's RSS growth), a 20-module desired-state apply, and the time to roll
back after a failing step. Run through bench/modules (it builds reeve first).

Everything runs under one temporary directory; every process started is stopped at the end.
"""
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REEVE = os.path.join(ROOT, "target/release/reeve")
BUDDY = os.path.join(ROOT, "target/release/reeve-buddy")
BIG_MB = int(os.environ.get("BIG_MB", "50"))
MANY = int(os.environ.get("MANY", "20"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def module(dir_, name, version, extra_files=None, configure_fails=False):
    os.makedirs(os.path.join(dir_, "hooks"), exist_ok=True)
    toml = f'name = "{name}"\nversion = "{version}"\n\n[services.main]\ncommand = ["sleep", "100000"]\n'
    if configure_fails:
        toml += '\n[hooks]\nconfigure = "hooks/configure"\n'
        hook = os.path.join(dir_, "hooks/configure")
        with open(hook, "w") as f:
            f.write("#!/bin/sh\necho failing on purpose >&2\nexit 1\n")
        os.chmod(hook, 0o755)
    with open(os.path.join(dir_, "module.toml"), "w") as f:
        f.write(toml)
    for rel, size in (extra_files or {}).items():
        with open(os.path.join(dir_, rel), "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 20)
                f.write(os.urandom(n))
                left -= n


def stop(procs, timeout=5):
    """SIGTERM each process started, in order, and waits for it (SIGKILL if it lingers)."""
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=timeout)
        except Exception:
            p.kill()


def run(env, *args, check=True):
    p = subprocess.run([REEVE, *args], env=env, capture_output=True, text=True)
    if check and p.returncode != 0:
        sys.exit(f"reeve {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def main():
    tmp = tempfile.mkdtemp(prefix="reeve-modbench")
    procs = []
    env = dict(os.environ, XDG_RUNTIME_DIR=os.path.join(tmp, "rt"))
    try:
        reg = os.path.join(tmp, "registry")
        keys = os.path.join(tmp, "keys")
        run(env, "module", "keygen", "--out-dir", keys, "--name", "bench")
        key = os.path.join(keys, "bench.key")

        def publish(src, name, version):
            out = os.path.join(reg, name, f"{name}-{version}")
            os.makedirs(out, exist_ok=True)
            pkg = run(env, "module", "pack", "--dir", src, "--out", out).stdout.strip()
            run(env, "module", "sign", pkg, "--key", key)

        module(os.path.join(tmp, "src/big"), "big", "1.0.0", {"payload.bin": BIG_MB << 20})
        publish(os.path.join(tmp, "src/big"), "big", "1.0.0")
        for i in range(MANY):
            d = os.path.join(tmp, f"src/m{i}")
            module(d, f"m{i}", "1.0.0")
            publish(d, f"m{i}", "1.0.0")
        module(os.path.join(tmp, "src/m0v2"), "m0", "2.0.0", configure_fails=True)
        publish(os.path.join(tmp, "src/m0v2"), "m0", "2.0.0")

        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                       "--directory", reg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        os.makedirs(os.path.join(tmp, "services"), exist_ok=True)
        agent = subprocess.Popen([REEVE, "agent", "--allow-root", "--data-dir", os.path.join(tmp, "data"),
                                  "--services-dir", os.path.join(tmp, "services"), "--buddy-path", BUDDY,
                                  "--registry", f"http://127.0.0.1:{port}", "--trusted-keys",
                                  os.path.join(keys, "bench.pub")],
                                 env=dict(env, REEVE_LOG="error"), stderr=subprocess.DEVNULL)
        procs.append(agent)
        for _ in range(500):
            if run(env, "ps", check=False).returncode == 0:
                break
            time.sleep(0.02)
        time.sleep(1)
        rss0 = rss_kb(agent.pid)
        t0 = time.perf_counter()
        run(env, "module", "install", "big@1.0.0")
        run(env, "module", "start", "big")
        t_big = time.perf_counter() - t0
        hwm = rss_kb(agent.pid, "VmHWM")
        rss1 = rss_kb(agent.pid)

        state = {"modules": [{"name": f"m{i}", "version": "1.0.0"} for i in range(MANY)]}
        t0 = time.perf_counter()
        out = json.loads(run(env, "state", "apply", "--state", json.dumps(state), "--json").stdout)
        t_many = time.perf_counter() - t0
        assert out["outcome"] == "applied", out

        state["modules"][0]["version"] = "2.0.0"
        t0 = time.perf_counter()
        p = run(env, "state", "apply", "--state", json.dumps(state), "--json", check=False)
        t_rollback = time.perf_counter() - t0
        report = json.loads(p.stdout)
        assert report["outcome"] == "rolled_back", report

        fsync_note = "default disk (no fsync shim)"
        res = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "big_module_mb": BIG_MB,
            "install_and_start_s": round(t_big, 3),
            "agent_rss_before_kb": rss0,
            "agent_peak_rss_kb": hwm,
            "agent_rss_after_kb": rss1,
            "agent_peak_growth_mib": round((hwm - rss0) / 1024, 2),
            "apply_modules": MANY,
            "apply_s": round(t_many, 3),
            "rollback_apply_s": round(t_rollback, 3),
            "rollback_steps": len(report["rollback_steps"]),
            "failed_step": report["failed_step"],
            "note": fsync_note,
        }
        print(json.dumps(res, indent=2))
        print(f"\ninstall+start of a {BIG_MB} MB module: {t_big:.2f} s; agent RSS {rss0} kB before, "
              f"peak {hwm} kB (growth {res['agent_peak_growth_mib']} MiB; target <= 16 MiB)")
        print(f"apply of {MANY} modules: {t_many:.2f} s; failing apply incl. rollback: {t_rollback:.2f} s "
              f"(target: rollback complete <= 30 s)")
        run(env, "stop", "--all", check=False)
        for mod in ["big"] + [f"m{i}" for i in range(MANY)]:
            run(env, "module", "stop", mod, check=False)
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
