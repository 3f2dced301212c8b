#!/usr/bin/env python3
"""Hub benchmarks (issue 5), against a real `reeve hub` with 10,000 nodes in its store:

  fleet page    what the dashboard's fleet view costs the server: `/`, its script and
                style, then the first page of nodes (`/api/v1/nodes?limit=101`), one
                after another on one keep-alive connection (median and p99 of the whole)
  node list     `GET /api/v1/nodes` pages at random offsets, some with a search (p50, p99)
  live streams  100 open `/api/v1/stream` readers; a real agent (joined, running one
                service) stops it, and the event it records goes agent -> hub -> every
                reader: time from the stop command to the last of the 100 readers, and the
                spread between the first and the last reader
  memory        the hub's RSS with the 10,000 nodes, and with the 100 streams open

The nodes are written straight into the hub's SQLite file while it is stopped (as
10,000 joins would have left them: name, key, facts, last seen). Everything runs under one
temporary directory, over loopback; every process started is stopped at the end.
Run through bench/hub (it builds the release binaries first).
"""
import base64, http.client, json, os, random, shutil, signal, socket, sqlite3, statistics, subprocess
import sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REEVE = os.path.join(ROOT, "target/release/reeve")
BUDDY = os.path.join(ROOT, "target/release/reeve-buddy")
NODES = int(os.environ.get("NODES", "10000"))
STREAMS = int(os.environ.get("STREAMS", "100"))
REQUESTS = int(os.environ.get("REQUESTS", "1000"))
TARGETS = {"fleet_page_ms": 100.0, "node_list_p99_ms": 50.0, "event_to_streams_ms": 100.0}

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from modules import free_port, rss_kb, run, stop  # noqa: E402


def wait_port(port, limit=20.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port}")


def start_hub(env, listen, http_port):
    p = subprocess.Popen([REEVE, "hub", "--listen", f"127.0.0.1:{listen}", "--http", f"127.0.0.1:{http_port}",
                          "--log-level", "error"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(http_port)
    return p


def seed(db, n):
    """`n` enrolled nodes, as joins and `hello`s leave them; a tenth never seen."""
    now = int(time.time() * 1000)
    rows = []
    for i in range(n):
        facts = {"agent_version": "0.1.0", "os": "linux", "arch": "x86_64", "hostname": f"edge-{i:05}",
                 "services": 8, "services_running": 8 if i % 17 else 7,
                 "service_states": [{"name": f"svc{j}", "state": "running", "pid": 1000 + j, "restarts": 0}
                                    for j in range(8)]}
        seen = None if i % 10 == 0 else now - random.randrange(0, 86_400_000)
        rows.append((f"node-{i:05}", base64.b64encode(os.urandom(32)).decode(), now - 86_400_000, seen,
                     json.dumps(facts), seen))
    c = sqlite3.connect(db)
    c.executemany("INSERT INTO hub_nodes (name, key, enrolled_ms, last_seen_ms, facts, facts_ms) "
                  "VALUES (?, ?, ?, ?, ?, ?)", rows)
    c.commit()
    c.close()


def kill_buddies(tmp):
    """The buddies (and their services) started under `tmp`: they outlive the agent by
    design, so the teardown ends them by pid."""
    pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]

    def cmdline(pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""

    def parent(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return 0

    buddies = [p for p in pids if "reeve-buddy" in cmdline(p) and tmp in cmdline(p)]
    for b in buddies:
        for child in (p for p in pids if parent(p) == b):
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.kill(b, signal.SIGKILL)
        except OSError:
            pass


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


class Api:
    def __init__(self, port, token):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.auth = {"Authorization": f"Bearer {token}"}

    def get(self, path, auth=True):
        self.conn.request("GET", path, headers=self.auth if auth else {})
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"GET {path}: HTTP {r.status} {body[:200]!r}")
        return body


def timed(f):
    t0 = time.perf_counter()
    f()
    return (time.perf_counter() - t0) * 1000


def fleet_page(api):
    def load():
        api.get("/", auth=False)
        api.get("/ui/app.js", auth=False)
        api.get("/ui/app.css", auth=False)
        rows = json.loads(api.get("/api/v1/nodes?offset=0&limit=101"))
        assert len(rows) == 101, len(rows)
    for _ in range(5):
        load()
    ts = [timed(load) for _ in range(200)]
    return {"median_ms": round(statistics.median(ts), 2), "p99_ms": round(pct(ts, 99), 2)}


def node_list(api, n):
    rng = random.Random(7)
    paths = []
    for i in range(REQUESTS):
        if i % 5 == 4:
            paths.append(f"/api/v1/nodes?search=node-0{rng.randrange(10)}{rng.randrange(10)}&limit=100")
        else:
            paths.append(f"/api/v1/nodes?offset={rng.randrange(0, max(1, n - 100))}&limit=100")
    for p in paths[:20]:
        api.get(p)
    ts = [timed(lambda p=p: api.get(p)) for p in paths]
    return {"requests": len(ts), "p50_ms": round(pct(ts, 50), 2), "p99_ms": round(pct(ts, 99), 2),
            "max_ms": round(max(ts), 2)}


class Reader(threading.Thread):
    """One `/api/v1/stream` reader: notes when the first `node_event` of `service` with
    kind `kind` arrives."""

    def __init__(self, port, token, service, kind):
        super().__init__(daemon=True)
        self.port, self.token, self.service, self.kind = port, token, service, kind
        self.ready = threading.Event()
        self.got = None
        self.conn = None

    def run(self):
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.conn.request("GET", "/api/v1/stream",
                          headers={"Accept": "text/event-stream", "Authorization": f"Bearer {self.token}"})
        r = self.conn.getresponse()
        self.ready.set()
        event = None
        try:
            while self.got is None:
                line = r.readline()
                if not line:
                    return
                line = line.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "node_event":
                    e = json.loads(line[5:])
                    if e.get("service") == self.service and e.get("kind") == self.kind:
                        self.got = time.perf_counter()
        except (OSError, ValueError):
            return


def live_streams(http_port, token, env, service):
    readers = [Reader(http_port, token, service, "stopping") for _ in range(STREAMS)]
    for r in readers:
        r.start()
    for r in readers:
        if not r.ready.wait(10):
            sys.exit("a stream reader did not connect")
    time.sleep(1)
    t0 = time.perf_counter()
    run(env, "stop", service)
    end = time.monotonic() + 20
    while time.monotonic() < end and any(r.got is None for r in readers):
        time.sleep(0.005)
    got = [r.got for r in readers if r.got is not None]
    if len(got) < len(readers):
        sys.exit(f"only {len(got)} of {len(readers)} readers saw the event")
    return readers, {"streams": len(readers), "stop_to_last_ms": round((max(got) - t0) * 1000, 2),
                     "stop_to_first_ms": round((min(got) - t0) * 1000, 2),
                     "first_to_last_ms": round((max(got) - min(got)) * 1000, 2)}


def main():
    for b in (REEVE, BUDDY):
        if not os.path.exists(b):
            sys.exit(f"{b} is missing: run bench/hub (it builds it)")
    tmp = tempfile.mkdtemp(prefix="reeve-hubbench")
    procs = []
    readers = []
    env = dict(os.environ, XDG_RUNTIME_DIR=os.path.join(tmp, "rt"), REEVE_HUB_DATA_DIR=os.path.join(tmp, "hub"))
    try:
        listen, http_port = free_port(), free_port()
        hub = start_hub(env, listen, http_port)
        token = run(env, "hub", "operator", "add", "bench", "--role", "admin").stdout.strip()
        stop([hub])
        t0 = time.perf_counter()
        seed(os.path.join(tmp, "hub", "hub.db"), NODES)
        print(f"[hub] seeded {NODES} nodes in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        hub = start_hub(env, listen, http_port)
        procs.append(hub)

        # A real node, joined and running one service, for the live event.
        join = run(env, "hub", "token", "create", "--url", f"https://127.0.0.1:{listen}").stdout.strip()
        data, services = os.path.join(tmp, "agent"), os.path.join(tmp, "services")
        os.makedirs(services)
        with open(os.path.join(services, "ticker.toml"), "w") as f:
            f.write('command = ["sleep", "100000"]\n')
        run(env, "agent", "join", "--data-dir", data, "--token", join, "--name", "live-node")
        agent = subprocess.Popen([REEVE, "agent", "--allow-root", "--data-dir", data, "--services-dir", services,
                                  "--buddy-path", BUDDY], env=dict(env, REEVE_LOG="error"),
                                 stderr=subprocess.DEVNULL)
        procs.insert(0, agent)
        api = Api(http_port, token)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            node = json.loads(api.get("/api/v1/nodes/live-node"))
            if node.get("online") and node.get("facts", {}).get("services_running") == 1:
                break
            time.sleep(0.1)
        else:
            sys.exit("the agent did not come online with its service running")
        time.sleep(1)
        res = {"nodes": NODES + 1}
        res["hub_rss_mb"] = round(rss_kb(hub.pid) / 1024, 2)
        res["fleet_page"] = fleet_page(api)
        res["node_list"] = node_list(api, NODES)
        readers, res["live"] = live_streams(http_port, token, env, "ticker")
        res["hub_rss_with_streams_mb"] = round(rss_kb(hub.pid) / 1024, 2)
        res["hub_hwm_mb"] = round(rss_kb(hub.pid, "VmHWM") / 1024, 2)
        report(res)
    finally:
        for r in readers:
            if r.conn:
                r.conn.close()
        stop(procs)
        kill_buddies(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def report(res):
    fp, nl, lv = res["fleet_page"], res["node_list"], res["live"]
    rows = [
        ("fleet page (HTML, script, style, first 101 nodes)", f"{fp['median_ms']} ms median, {fp['p99_ms']} ms p99",
         f"<= {TARGETS['fleet_page_ms']:.0f} ms", fp["p99_ms"] <= TARGETS["fleet_page_ms"]),
        (f"node list API, {nl['requests']} pages of 100", f"{nl['p50_ms']} ms p50, {nl['p99_ms']} ms p99",
         f"p99 <= {TARGETS['node_list_p99_ms']:.0f} ms", nl["p99_ms"] <= TARGETS["node_list_p99_ms"]),
        (f"one event to {lv['streams']} live streams (agent stop -> last reader)",
         f"{lv['stop_to_last_ms']} ms (first reader {lv['stop_to_first_ms']} ms, spread {lv['first_to_last_ms']} ms)",
         f"<= {TARGETS['event_to_streams_ms']:.0f} ms", lv["stop_to_last_ms"] <= TARGETS["event_to_streams_ms"]),
        (f"hub RSS, {res['nodes']} nodes", f"{res['hub_rss_mb']} MB", "report", True),
        (f"hub RSS, {res['nodes']} nodes + {lv['streams']} streams", f"{res['hub_rss_with_streams_mb']} MB", "report", True),
    ]
    for what, got, target, ok in rows:
        print(f"{what:<62} {got:<58} {target:<16} {'ok' if ok else 'MISSED'}")
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    path = os.path.join(ROOT, "bench/results", time.strftime("hub-%Y%m%d-%H%M%S.json"))
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
    print(f"[hub] written {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
