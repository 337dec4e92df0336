#!/usr/bin/env python3
"""Fault suite: real Tributary processes, the built-in fake exchange and a throwaway PostgreSQL
cluster, all on 127.0.0.1; every wait is bounded. Run it through scripts/faults (which starts the
cluster). Gaps are judged as a user would: by the simulator's trade ids found in
websocket_messages, and by the source ids a realtime client received, not by Tributary's counters.

Prints one line of figures per scenario and exits non-zero if any scenario misses its bound.
"""
import base64
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BIN = os.environ.get("TRIBUTARY_BIN", ".build/debug/tributary")
ADMIN_URL = os.environ["TRIBUTARY_TEST_POSTGRES_URL"]
PG_CTL = shlex.split(os.environ["TRIBUTARY_TEST_PG_CTL"])
WORK = tempfile.mkdtemp(prefix="tributary-faults.")
KEY = subprocess.check_output([BIN, "keygen"], text=True).strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
        return 0, None


def psql(database, sql):
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    return subprocess.run(["psql", "-At", "-d", url, "-c", sql], capture_output=True, text=True, timeout=30).stdout.strip()


def pg(action):
    extra = ["-m", "fast"] if action == "stop" else ["-w"]
    subprocess.run(PG_CTL + [action] + extra, capture_output=True, timeout=60)


def wait_until(predicate, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


class Simulator:
    def __init__(self, name, rate, total, drop_every=0):
        self.port = free_port()
        self.log = open(os.path.join(WORK, f"{name}-simulator.log"), "w")
        args = [BIN, "simulate", "--port", str(self.port), "--rate", str(rate), "--total", str(total)]
        if drop_every:
            args += ["--drop-every", str(drop_every)]
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: http(self.port, "GET", "/stats")[0] == 200, 30)

    def stats(self):
        return http(self.port, "GET", "/stats")[1] or {}

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


class Server:
    def __init__(self, name, database, extra_env=None):
        self.name = name
        self.port = free_port()
        self.data = os.path.join(WORK, f"{name}-data")
        self.env = dict(os.environ)
        self.env.update({
            "DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + "/" + database,
            "ENCRYPTION_KEY": KEY,
            "TRIBUTARY_ALLOW_PRIVATE_TARGETS": "127.0.0.1/32",
            "TRIBUTARY_DATA_DIR": self.data,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DB_POOL_TIMEOUT": "2",
        })
        self.env.update(extra_env or {})
        self.starts = 0
        self.process = None

    def start(self, wait_ready=True):
        self.starts += 1
        log = open(os.path.join(WORK, f"{self.name}-server-{self.starts}.log"), "w")
        self.process = subprocess.Popen([BIN, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        ok = wait_until(lambda: http(self.port, "GET", "/health")[0] == 200, 60)
        if ok and wait_ready:
            ok = wait_until(lambda: http(self.port, "GET", "/ready")[0] == 200, 60)
        if not ok:
            raise RuntimeError(f"{self.name}: server did not come up")

    def signal(self, sig):
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = "hung"
        return code, time.monotonic() - started

    def spool(self):
        status, _ = http(self.port, "GET", "/health")
        if status != 200:
            return {}
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except Exception:
            return {}
        figures = {}
        for line in text.splitlines():
            if line.startswith("tributary_spool_") or line.startswith("tributary_connector_messages_received_total"):
                name, _, value = line.rpartition(" ")
                figures[name] = float(value)
        return figures


class RealtimeListener:
    """A WebSocket client on /api/realtime that records every broadcast source_id (no library:
    a handshake and unmasked server frames are all it needs). With stall=True it never reads."""

    def __init__(self, port, stall=False):
        self.sources = []
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if stall:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET /api/realtime HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]
        if not stall:
            threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        self.sock.settimeout(None)
        try:
            while True:
                while True:
                    frame = self.parse()
                    if frame is None:
                        break
                    opcode, payload = frame
                    if opcode == 1:
                        message = json.loads(payload)
                        if message.get("type") == "data_update":
                            self.sources.append(message["data"].get("source_id"))
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return
                self.buffer += chunk
        except OSError:
            return

    def parse(self):
        b = self.buffer
        if len(b) < 2:
            return None
        opcode, length, offset = b[0] & 0x0F, b[1] & 0x7F, 2
        if length == 126:
            if len(b) < 4:
                return None
            length, offset = int.from_bytes(b[2:4], "big"), 4
        elif length == 127:
            if len(b) < 10:
                return None
            length, offset = int.from_bytes(b[2:10], "big"), 10
        if len(b) < offset + length:
            return None
        self.buffer = b[offset + length:]
        return opcode, b[offset:offset + length]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def create_database(name):
    psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {name}")


def start_connector(server, simulator):
    body = {
        "name": "faults-okx", "connector_type": "websocket", "exchange": "okx",
        "api_url": f"ws://127.0.0.1:{simulator.port}/ws/v5/public",
        "subscription_message": {"op": "subscribe", "args": [
            {"channel": "trades", "instId": "BTC-USDT"}, {"channel": "trades", "instId": "ETH-USDT"}]},
    }
    status, created = http(server.port, "POST", "/api/connectors", body)
    assert status in (200, 201), f"create connector: {status}"
    connector = created["connector_id"]
    status, _ = http(server.port, "POST", f"/api/connectors/{connector}/start")
    assert status == 200, f"start connector: {status}"
    return connector


def stored(database, connector):
    text = psql(database, f"SELECT count(*), count(DISTINCT source_id) FROM websocket_messages WHERE connector_id = '{connector}'")
    rows, distinct = (int(x) for x in text.split("|")) if "|" in text else (0, 0)
    return rows, distinct


def settle(database, connector, simulator, total, timeout):
    """Waits until the simulator sent everything and the table stops growing (or has it all)."""
    started = time.monotonic()
    wait_until(lambda: simulator.stats().get("sent", 0) >= total, timeout)
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - started < timeout:
        _, distinct = stored(database, connector)
        if distinct >= total:
            break
        if distinct != last:
            last, stable_since = distinct, time.monotonic()
        elif time.monotonic() - stable_since > 8:
            break
        time.sleep(0.25)
    return time.monotonic() - started


def missing_ids(database, connector, stats):
    """The first few trade ids (instrument:id) the simulator sent that are not stored."""
    missing = []
    for instrument, count in sorted((stats.get("trades_per_instrument") or {}).items()):
        text = psql(database, f"SELECT string_agg(n::text, ',') FROM (SELECT n FROM generate_series(1, {int(count)}) n "
                              f"EXCEPT SELECT CAST(split_part(source_id, ':', 4) AS bigint) FROM websocket_messages "
                              f"WHERE connector_id = '{connector}' AND instrument = '{instrument}' ORDER BY n LIMIT 5) m")
        missing += [f"{instrument}:{n}" for n in text.split(",") if n]
    return missing[:5]


def figures(database, connector, simulator):
    stats = simulator.stats()
    sent = stats.get("sent", 0)
    rows, distinct = stored(database, connector)
    result = {"sent": sent, "stored": distinct, "missing": sent - distinct, "duplicate_rows": rows - distinct}
    if result["missing"] > 0:
        result["first_missing"] = ",".join(missing_ids(database, connector, stats))
    return result


RESULTS = []


def report(name, passed, **values):
    RESULTS.append(passed)
    shown = " ".join(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}" for key, value in values.items())
    print(f"faults: {name}: {'PASS' if passed else 'FAIL'} {shown}", flush=True)


def scenario_postgres_outage():
    """PostgreSQL stopped for 10 s mid-stream at 2,000 msg/s."""
    database, total = "faults_outage", 50_000
    create_database(database)
    simulator = Simulator("outage", 2000, total)
    server = Server("outage", database)
    server.start()
    listener = RealtimeListener(server.port)
    connector = start_connector(server, simulator)
    time.sleep(6)
    pg("stop")
    time.sleep(5)
    peak = server.spool()
    time.sleep(5)
    pg("restart")
    back = time.monotonic()
    wait_until(lambda: stored(database, connector)[1] >= simulator.stats().get("sent", 0) - 10, 60)
    recovery = time.monotonic() - back
    settle(database, connector, simulator, total, 60)
    time.sleep(1)
    result = figures(database, connector, simulator)
    broadcast_duplicates = len(listener.sources) - len(set(listener.sources))
    listener.close()
    code, seconds = server.signal(signal.SIGTERM)
    simulator.stop()
    report(
        "postgres stopped 10 s at 2,000 msg/s", result["missing"] == 0 and result["duplicate_rows"] == 0 and broadcast_duplicates == 0
        and result["sent"] == total and code == 0,
        **result, broadcast=len(listener.sources), broadcast_duplicates=broadcast_duplicates, catch_up_s=recovery,
        spool_bytes_during_outage=int(peak.get("tributary_spool_bytes", 0)), exit=code)


def scenario_restart(kind):
    """SIGTERM or kill -9 mid-stream at 2,000 msg/s, then a restart."""
    database, total = f"faults_{kind}", 30_000
    create_database(database)
    simulator = Simulator(kind, 2000, total)
    server = Server(kind, database)
    server.start()
    connector = start_connector(server, simulator)
    time.sleep(5)
    code, seconds = server.signal(signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
    before = figures(database, connector, simulator)
    server.start()
    settle(database, connector, simulator, total, 90)
    time.sleep(1)
    result = figures(database, connector, simulator)
    server.signal(signal.SIGTERM)
    simulator.stop()
    if kind == "sigterm":
        # At most one frame of slack: the fake exchange can write a frame after its WebSocket library
        # has answered the client's Close, which no client may read, yet counts it as sent.
        passed = code == 0 and result["missing"] <= 2 and result["duplicate_rows"] == 0 and result["sent"] == total
    else:
        passed = result["duplicate_rows"] == 0 and result["sent"] == total and result["missing"] <= KILL_BOUND
    report(f"{'SIGTERM' if kind == 'sigterm' else 'kill -9'} mid-stream, restart", passed, **result,
           stopped_in_s=seconds, exit=code, stored_at_stop=before["stored"], sent_at_stop=before["sent"])


def scenario_kill_during_outage():
    """kill -9 during a PostgreSQL outage, restarted while it is still down, then PostgreSQL back."""
    database, total = "faults_kill_outage", 30_000
    create_database(database)
    simulator = Simulator("kill-outage", 2000, total)
    server = Server("kill-outage", database)
    server.start()
    connector = start_connector(server, simulator)
    time.sleep(4)
    pg("stop")
    time.sleep(3)
    server.signal(signal.SIGKILL)
    server.start(wait_ready=False)
    ready_while_down = http(server.port, "GET", "/ready")[0]
    time.sleep(3)
    # SIGTERM while the database is still down: exit 0 promptly, the spool kept; then start again.
    term_code, term_seconds = server.signal(signal.SIGTERM)
    server.start(wait_ready=False)
    time.sleep(2)
    pg("restart")
    settle(database, connector, simulator, total, 90)
    time.sleep(1)
    result = figures(database, connector, simulator)
    server.signal(signal.SIGTERM)
    simulator.stop()
    report("kill -9 during an outage, restart while down, SIGTERM while down", result["duplicate_rows"] == 0 and result["sent"] == total
           and result["missing"] <= KILL_BOUND and ready_while_down == 503 and term_code == 0 and term_seconds < 15,
           **result, ready_while_down=ready_while_down, sigterm_exit=term_code, sigterm_s=term_seconds)


def scenario_drops():
    """The exchange drops the connection every 5,000 messages at 1,000 msg/s."""
    database, total, rate = "faults_drops", 25_000, 1000
    create_database(database)
    simulator = Simulator("drops", rate, total, drop_every=5000)
    server = Server("drops", database)
    server.start()
    connector = start_connector(server, simulator)
    settle(database, connector, simulator, total, 90)
    time.sleep(1)
    result = figures(database, connector, simulator)
    gaps = simulator.stats().get("reconnect_gaps_ms", [])
    server.signal(signal.SIGTERM)
    simulator.stop()
    # What a live exchange would have sent while Tributary was away: the gaps at the stream's rate.
    unheard = sum(gaps) / 1000 * rate
    fraction = unheard / (total + unheard) * 100
    report("exchange drops every 5,000 at 1,000 msg/s", result["missing"] == 0 and result["duplicate_rows"] == 0 and fraction < 5,
           **result, reconnects=len(gaps), max_gap_ms=max(gaps or [0]), unheard_percent=fraction)


def scenario_stalled_client():
    """A realtime client that never reads, at 2,000 msg/s."""
    database, total = "faults_stalled", 20_000
    create_database(database)
    simulator = Simulator("stalled", 2000, total)
    server = Server("stalled", database)
    server.start()
    stalled = RealtimeListener(server.port, stall=True)
    connector = start_connector(server, simulator)
    took = settle(database, connector, simulator, total, 60)
    result = figures(database, connector, simulator)
    stalled.close()
    code, _ = server.signal(signal.SIGTERM)
    simulator.stop()
    report("a stalled realtime client", result["missing"] == 0 and result["sent"] == total and took < 20 and code == 0,
           **result, ingest_s=took)


def scenario_spool_full():
    """The spool at its limit during an outage: connectors stop reading, nothing is dropped."""
    database, total = "faults_full", 30_000
    create_database(database)
    simulator = Simulator("full", 2000, total)
    server = Server("full", database, {"SPOOL_MAX_BYTES": str(1 << 20)})
    server.start()
    connector = start_connector(server, simulator)
    time.sleep(3)
    pg("stop")
    paused = wait_until(lambda: server.spool().get("tributary_spool_bytes", 0) >= 1 << 20, 20)
    # Paused, the connector reads nothing more. (The exchange feels it once the kernel's socket
    # buffers are full: up to tcp_rmem's maximum, 32 MiB here, so only after a long outage.)
    def received():
        return sum(v for k, v in server.spool().items() if k.startswith("tributary_connector_messages_received_total"))
    time.sleep(1)
    received_when_full = received()
    time.sleep(5)
    stalled = int(received() - received_when_full)
    peak = int(server.spool().get("tributary_spool_bytes", 0))
    pg("restart")
    status = None
    wait_until(lambda: http(server.port, "GET", f"/api/connectors/{connector}")[0] == 200, 30)
    status = http(server.port, "GET", f"/api/connectors/{connector}")[1] or {}
    last_error = ((status.get("data") or {}).get("last_error") or "")
    settle(database, connector, simulator, total, 90)
    time.sleep(1)
    result = figures(database, connector, simulator)
    dropped = ((status.get("data") or {}).get("performance_metrics") or {}).get("messages_dropped")
    server.signal(signal.SIGTERM)
    simulator.stop()
    report("spool full (1 MiB) during an outage", paused and result["missing"] == 0 and result["sent"] == total
           and "spool is full" in last_error and received_when_full > 0 and stalled == 0 and dropped == 0,
           **result, spool_bytes=peak, received_when_full=int(received_when_full), received_in_5s_while_full=stalled, dropped=dropped, last_error=repr(last_error[:40]))


# kill -9 loses what was only in memory: messages received since the last write started (in
# `SPOOL_MODE=spill`, the default, while the database keeps up) — at 2,000 msg/s a few write
# round trips, so the bound checked here is 1 s of stream.
KILL_BOUND = 2000

def instances_of(server):
    status, body = http(server.port, "GET", "/api/instances")
    return (body or {}).get("data") or [] if status == 200 else []


def owner_of(server, connector):
    """The alive instance holding the connector's lease, as `server` sees it."""
    for instance in instances_of(server):
        if instance.get("status") == "alive" and connector in (instance.get("connectors") or []):
            return instance["instance_id"]
    return None


def scenario_cluster_kill():
    """Three instances on one PostgreSQL, a connector at 2,000 msg/s; kill -9 its owner 10 times
    (restarting it each time) and time the takeover: from the kill to another instance holding
    the lease, and to the next stored trade."""
    database, kills = "faults_cluster", 10
    create_database(database)
    simulator = Simulator("cluster", 2000, 0)
    servers = [Server(f"cluster{i}", database) for i in range(1, 4)]
    for server in servers:
        server.start()
    ids = {}
    for server in servers:
        wait_until(lambda: any(i.get("self") for i in instances_of(server)), 30)
        ids[next(i["instance_id"] for i in instances_of(server) if i.get("self"))] = server
    connector = start_connector(servers[0], simulator)
    wait_until(lambda: owner_of(servers[0], connector) is not None, 30)
    lease_times, data_times = [], []
    for _ in range(kills):
        time.sleep(3)
        owner = owner_of(servers[0], connector) or owner_of(servers[1], connector)
        victim = ids[owner]
        survivors = [s for s in servers if s is not victim]
        before = stored(database, connector)[0]
        victim.process.kill()
        killed = time.monotonic()
        victim.process.wait(timeout=10)
        took = wait_until(lambda: (owner_of(survivors[0], connector) or victim) not in (None, owner), 30, step=0.05)
        lease_times.append(time.monotonic() - killed if took else float("inf"))
        wait_until(lambda: stored(database, connector)[0] > before + 100, 30, step=0.1)
        data_times.append(time.monotonic() - killed)
        victim.start()
    http(servers[0].port, "POST", f"/api/connectors/{connector}/stop")
    time.sleep(3)
    sent = simulator.stats().get("sent", 0)
    settle(database, connector, simulator, sent, 60)
    result = figures(database, connector, simulator)
    for server in servers:
        server.signal(signal.SIGTERM)
    simulator.stop()
    lease_times.sort()
    data_times.sort()
    report(
        f"cluster: kill -9 of the owner x{kills}, 3 instances, 2,000 msg/s",
        result["duplicate_rows"] == 0 and result["missing"] <= kills * KILL_BOUND and lease_times[-1] < 15,
        **result, takeover_median_s=lease_times[len(lease_times) // 2], takeover_max_s=lease_times[-1],
        first_row_median_s=data_times[len(data_times) // 2], first_row_max_s=data_times[-1],
        takeovers_s=",".join(f"{t:.1f}" for t in lease_times))


SCENARIOS = {
    "outage": scenario_postgres_outage,
    "sigterm": lambda: scenario_restart("sigterm"),
    "kill": lambda: scenario_restart("kill"),
    "kill-outage": scenario_kill_during_outage,
    "drops": scenario_drops,
    "stalled": scenario_stalled_client,
    "spool-full": scenario_spool_full,
    "cluster-kill": scenario_cluster_kill,
}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(SCENARIOS)
    print(f"faults: logs in {WORK}", flush=True)
    for name in chosen:
        try:
            SCENARIOS[name]()
        except Exception as error:  # a scenario that breaks is a failure, and the others still run
            report(name, False, error=repr(error))
            pg("restart")
    sys.exit(0 if all(RESULTS) else 1)
