"""Real servers on loopback for the line-output tests: Mosquitto, a throw-away PostgreSQL cluster
and a stdlib HTTP receiver. Each is started and stopped by the test (or a fixture) that uses it.

A missing binary (or Python package: `need_module`) skips the test with the reason, except in CI
(CI=true), where `.ci/run` installs them and their absence fails the test.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import running_in_ci

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = START_TIMEOUT_S, process: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def missing(what: str, install: str):
    """Skip (or fail in CI) for a server binary that is not installed."""
    message = f"{what} is not installed ({install})"
    if running_in_ci():
        pytest.fail(f"{message}: .ci/run installs it, CI must run these tests", pytrace=False)
    pytest.skip(message)


def need_module(name: str, install: str):
    """Import a Python package a line test needs; without it skip, except in CI (`.ci/run` installs it
    with ".[dev]"), where its absence fails. Works at module level too."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"the Python package {name} is not installed ({install})"
        if running_in_ci():
            pytest.fail(f"{message}: .ci/run installs it, CI must run these tests", pytrace=False)
        pytest.skip(message, allow_module_level=True)


class Mosquitto:
    """A Mosquitto broker on 127.0.0.1:port, no persistence; `stop`/`start` for fault tests."""

    def __init__(self, folder: Path, port: int | None = None, tls: dict[str, Path] | None = None):
        self.binary = shutil.which("mosquitto") or next(iter(glob.glob("/usr/sbin/mosquitto")), None)
        if self.binary is None:
            missing("mosquitto", "apt-get install mosquitto")
        self.folder = Path(folder)
        self.port = port or free_port()
        self.config = self.folder / "mosquitto.conf"
        tls_lines = "" if tls is None else f"cafile {tls['ca']}\ncertfile {tls['cert']}\nkeyfile {tls['key']}\n"
        self.config.write_text(f"listener {self.port} 127.0.0.1\n{tls_lines}allow_anonymous true\npersistence false\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mosquitto":
        log = open(self.folder / "mosquitto.log", "ab")
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        log.close()
        wait_port(self.port, process=self.process)
        return self

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing connections (as in a crash)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    stop = kill


def make_tls_files() -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it (openssl): {'ca', 'cert', 'key',
    'folder'}, in a readable temp folder (not under pytest's 0700 ones: as root, mosquitto reads them as
    its own user). The caller removes 'folder'."""
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("openssl", "apt-get install openssl")
    folder = Path(tempfile.mkdtemp(prefix="deco-tls-"))
    folder.chmod(0o755)
    files = {"ca": folder / "ca.pem", "ca_key": folder / "ca.key", "cert": folder / "server.pem",
             "key": folder / "server.key", "csr": folder / "server.csr", "ext": folder / "san.ext"}
    files["ext"].write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", files["ca_key"], "-out", files["ca"],
             "-days", "2", "-subj", "/CN=deco-test-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files["key"], "-out", files["csr"], "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", files["csr"], "-CA", files["ca"], "-CAkey", files["ca_key"], "-CAcreateserial",
             "-out", files["cert"], "-days", "2", "-extfile", files["ext"]]):
        subprocess.run([openssl, *map(str, argv)], check=True, capture_output=True, timeout=60)
    for path in files.values():
        path.chmod(0o644)
    return {**files, "folder": folder}


class Postgres:
    """A throw-away PostgreSQL cluster in a temp folder on 127.0.0.1:port, trust authentication.
    PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user (the
    Debian package creates it)."""

    def __init__(self):
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        pg_config = shutil.which("pg_config")
        if pg_config:
            bindirs.insert(0, subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        self.bindir = next((Path(d) for d in bindirs if (Path(d) / "initdb").is_file()), None)
        if self.bindir is None:
            missing("PostgreSQL", "apt-get install postgresql")
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                missing("a 'postgres' user to run PostgreSQL as (not root)", "apt-get install postgresql")
        self.folder = Path(tempfile.mkdtemp(prefix="deco-pg-"))  # not under pytest's 0700 folders
        self.data = self.folder / "data"
        self.port = free_port()
        if self.user is not None:
            os.chmod(self.folder, 0o700)
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self.bindir / tool), *args]
        kwargs = {}
        if self.user is not None:
            # not preexec_fn: that is unsafe in a process with threads (the sinks' threads)
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
            kwargs["env"] = {**os.environ, "HOME": str(self.folder), "USER": "postgres"}
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.folder, timeout=120, **kwargs)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "Postgres":
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w",
                  "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """fast: a clean stop; immediate: like a crash (recovery at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class HttpReceiver:
    """A webhook receiver on 127.0.0.1: keeps every POSTed JSON body (with its Idempotency-Key);
    `answers` (a list of status codes) is used up first, then every request gets 200."""

    def __init__(self, port: int = 0):
        self.bodies: list[dict] = []
        self.keys: list[str] = []
        self.answers: list[int] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = owner.answers.pop(0) if owner.answers else 200
                if status == 200:
                    owner.bodies.append(json.loads(body))
                    owner.keys.append(self.headers.get("Idempotency-Key", ""))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/results"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(condition, timeout: float, what: str, interval: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


async def vision_system(client):
    """The PLC side of the OPC UA output: (value(folder, name), call(folder, method, *args)) for an
    asyncua client connected to a station; folder is 'system', 'recipes' or 'results'."""
    from lineio.opcua import NAMESPACE

    ns = await client.get_namespace_index(NAMESPACE)
    system = await client.nodes.objects.get_child(f"{ns}:VisionSystem")
    folders = {"system": system, "recipes": await system.get_child(f"{ns}:RecipeManagement"),
               "results": await system.get_child(f"{ns}:ResultManagement")}

    async def value(folder: str, name: str):
        return await (await folders[folder].get_child(f"{ns}:{name}")).read_value()

    async def call(folder: str, method: str, *args):
        return await folders[folder].call_method(f"{ns}:{method}", *args)

    return value, call
