"""Fixtures for the SDK fidelity tests. With EMULATOR_URL / MOTO_URL set, the tests use those servers
and start nothing; otherwise they start the emulator binary ($EMULATOR_BIN, else
target/debug/kms-emulator) and moto (`python -m moto.server`, from this venv) on free 127.0.0.1 ports
and stop them by PID at the end."""

import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from emu import Admin

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOG_DIR = pathlib.Path(os.environ.get("ALIASSYNC_RUN", ROOT / "target" / "rig")) / "sdk-tests"


def emulator_bin():
    return pathlib.Path(os.environ.get("EMULATOR_BIN", ROOT / "target" / "debug" / "kms-emulator"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, log, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log: {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server not listening on {port} after {timeout}s; log: {log}")


class Server:
    """A child process started by the tests, stopped by its PID."""

    def __init__(self, name, argv, port):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log = LOG_DIR / f"{name}.log"
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log, "ab") as out:
            # Own session: a Ctrl-C in the terminal does not reach it before we stop it ourselves.
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_listening(port, self.proc, self.log)
        except Exception:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_emulator(*extra):
    binary = emulator_bin()
    if not binary.is_file():
        pytest.fail(f"no emulator binary at {binary}: run `cargo build -p kms-emulator` or set EMULATOR_BIN")
    port = free_port()
    return Server("kms-emulator", [str(binary), "--listen", f"127.0.0.1:{port}", *extra], port)


@pytest.fixture(scope="session")
def emulator_url():
    if os.environ.get("EMULATOR_URL"):
        yield os.environ["EMULATOR_URL"].rstrip("/")
        return
    server = start_emulator()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def moto_url():
    if os.environ.get("MOTO_URL"):
        yield os.environ["MOTO_URL"].rstrip("/")
        return
    port = free_port()
    env_argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = Server("moto", env_argv, port)
    yield server.url
    server.stop()


@pytest.fixture
def admin(emulator_url):
    """The admin API, with the emulator reset before each test (state, faults, counters)."""
    a = Admin(emulator_url)
    a.reset()
    yield a
    a.clear_faults()


def reset_moto(url):
    req = urllib.request.Request(url + "/moto-api/reset", data=b"", method="POST")
    urllib.request.urlopen(req, timeout=10).read()
