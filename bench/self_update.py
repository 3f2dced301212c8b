#!/usr/bin/env python3
"""Self-update benchmark (issue 4): the agent runs under `reeve-buddy launch` with 10 `sleep`
services; `reeve agent update` is timed, from the command until it has the launcher's
outcome, for
  - a package whose agent crashes at start (switched back; trial limit 30 s),
  - a package whose agent never reports healthy (switched back; trial limit 5 s),
  - a good package holding the real release binaries (committed), after which every buddy
    is re-executed into the package's reeve-buddy.
Also checks that no service changed pid. Run through bench/modules (it builds reeve first).
"""
import json, os, shutil, signal, socket, stat, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from modules import BUDDY, REEVE, free_port, run, stop  # noqa: E402

SERVICES = 10


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def package(src, version, files):
    """An agent package: module.toml plus `files` ({relative path: source path or script})."""
    write(os.path.join(src, "module.toml"), f'name = "reeve-agent"\nversion = "{version}"\n')
    for rel, what in files.items():
        dst = os.path.join(src, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if what.startswith("#!"):
            write(dst, what, 0o755)
        else:
            shutil.copy(what, dst)
            os.chmod(dst, os.stat(dst).st_mode | stat.S_IXUSR)


def main():
    tmp = tempfile.mkdtemp(prefix="reeve-updbench")
    env = dict(os.environ, XDG_RUNTIME_DIR=os.path.join(tmp, "rt"))
    procs = []
    buddies = []
    try:
        reg = os.path.join(tmp, "registry")
        keys = os.path.join(tmp, "keys")
        run(env, "module", "keygen", "--out-dir", keys, "--name", "bench")

        def publish(version, files):
            src = os.path.join(tmp, f"src/{version}")
            package(src, version, files)
            out = os.path.join(reg, "reeve-agent", f"reeve-agent-{version}")
            os.makedirs(out, exist_ok=True)
            pkg = run(env, "module", "pack", "--dir", src, "--out", out).stdout.strip()
            run(env, "module", "sign", pkg, "--key", os.path.join(keys, "bench.key"))
            return os.path.getsize(pkg)

        answers = "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'reeve 9'; exit 0; fi\n"
        publish("9.1.0", {"bin/reeve": answers + "echo 'panicked at start' >&2; exit 101\n"})
        publish("9.2.0", {"bin/reeve": answers + "exec sleep 1000\n"})
        release = os.path.dirname(REEVE)
        size = publish("9.0.0", {f"bin/{b}": os.path.join(release, b)
                                 for b in ("reeve", "reeve-buddy", "reeve-modwork")})

        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                       "--directory", reg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        services = os.path.join(tmp, "services")
        for i in range(SERVICES):
            write(os.path.join(services, f"s{i}.toml"), 'command = ["sleep", "100000"]\n')
        launcher = subprocess.Popen(
            [BUDDY, "launch", "--home", os.path.join(tmp, "launcher"), "--",
             REEVE, "agent", "--allow-root", "--data-dir", os.path.join(tmp, "data"),
             "--services-dir", services, "--registry", f"http://127.0.0.1:{port}",
             "--trusted-keys", os.path.join(keys, "bench.pub")],
            env=dict(env, REEVE_LOG="error"), stderr=subprocess.DEVNULL)
        procs.append(launcher)
        for _ in range(500):
            if run(env, "ps", check=False).returncode == 0:
                break
            time.sleep(0.02)
        time.sleep(1)
        ps0 = json.loads(run(env, "ps", "--json").stdout)
        pids = {s["name"]: s["pid"] for s in ps0}
        buddy_pids = {s["name"]: s["buddy_pid"] for s in ps0}

        def update(version, trial):
            t0 = time.perf_counter()
            p = run(env, "agent", "update", "--version", version, "--trial-timeout", trial, "--json",
                    check=False)
            took = time.perf_counter() - t0
            out = json.loads(p.stdout) if p.stdout.strip() else {}
            return p.returncode, took, out

        results = {}
        for version, trial, want, label in [
            ("9.1.0", "30s", 3, "crash at start, switched back"),
            ("9.2.0", "5s", 3, "never healthy, switched back"),
            ("9.0.0", "30s", 0, "good release package, committed"),
        ]:
            code, took, out = update(version, trial)
            if code != want:
                sys.exit(f"update to {version}: exit {code}, wanted {want}: {out}")
            results[version] = {"what": label, "trial_limit": trial, "seconds": round(took, 3),
                                "reason": out.get("outcome", {}).get("reason")}
        after = {s["name"]: s["pid"] for s in json.loads(run(env, "ps", "--json").stdout)}
        if after != pids:
            sys.exit(f"services changed pid: {pids} -> {after}")
        # After the commit the new agent re-executes every buddy into the package's buddy.
        new_buddy = os.path.realpath(os.path.join(tmp, "launcher/versions/9.0.0/bin/reeve-buddy"))
        ps1 = json.loads(run(env, "ps", "--json").stdout)
        if {s["name"]: s["buddy_pid"] for s in ps1} != buddy_pids:
            sys.exit("a buddy changed pid")
        buddies = [s["buddy_pid"] for s in ps1]
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 20:
            exes = [os.path.realpath(f"/proc/{b}/exe") for b in buddies]
            if all(e == new_buddy for e in exes):
                break
            time.sleep(0.02)
        else:
            sys.exit(f"buddies not re-executed into {new_buddy}: {exes}")
        t_reexec = time.perf_counter() - t0
        res = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "services": SERVICES,
               "good_package_bytes": size, "updates": results, "service_pids_unchanged": True,
               "buddies_reexecuted_s_after_outcome": round(t_reexec, 3)}
        print(json.dumps(res, indent=2))
        for v, r in results.items():
            print(f"agent update to {v} ({r['what']}, trial limit {r['trial_limit']}): {r['seconds']:.2f} s")
        print(f"{SERVICES} services kept their pids through all three; their buddies ran the "
              f"package's reeve-buddy {t_reexec:.2f} s after the outcome was known (same pids)")
        run(env, "stop", "--all", check=False)
        buddies = [s["buddy_pid"] for s in json.loads(run(env, "ps", "--json").stdout)
                   if s.get("buddy_pid")]
    finally:
        # The agent first (its launcher takes it down), then the buddies: a buddy stopped
        # while the agent runs is replaced by a new one.
        stop(procs, timeout=15)
        for b in buddies:
            try:
                os.kill(b, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
