"""The worker's handle on its zygote (worker/sandbox/zygote.py): start it on first use (again
if it died, or in a forked pool process), ask it for a sandbox, learn how a sandbox ended."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

from kiln.errors import InfraError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0
MAX_MESSAGE = 1 << 16


class Zygote:
    """One per worker process. `spawn` hands the zygote a job's three pipe ends and returns the
    sandbox's pid; `exit_code` waits for the zygote to say how that pid ended."""

    _current: ClassVar[Zygote | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, env: dict[str, str]) -> None:
        self.owner = os.getpid()
        self.home = tempfile.mkdtemp(prefix="kiln-zygote-")
        self.exits: dict[int, int] = {}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        log_path = Path(self.home) / "zygote.log"
        with open(log_path, "wb") as errors:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "worker.sandbox.zygote", str(theirs.fileno()),
                 str(os.getpid())],
                pass_fds=(theirs.fileno(),), env={**env, "HOME": self.home, "TMPDIR": self.home},
                cwd=self.home, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors,
                start_new_session=True,
            )  # fmt: skip
        theirs.close()
        reply = self._receive(START_TIMEOUT_S)
        if reply is None or "ready" not in reply:
            self.close()
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise InfraError(f"the sandbox zygote did not start: {tail or 'no output'}")

    @classmethod
    def get(cls, env: dict[str, str]) -> Zygote:
        """This process's zygote, started (or restarted) as needed."""
        with cls._lock:
            z = cls._current
            if z is None or z.owner != os.getpid() or z.proc.poll() is not None:
                if z is not None and z.owner == os.getpid():
                    z.close()
                z = cls._current = Zygote(env)
            return z

    def spawn(self, home: str, env: dict[str, str], network: str, fds: tuple[int, int, int]) -> int:
        """A sandbox for one job: `fds` are its request (read end), frames and output (write
        ends). Returns its pid."""
        job = json.dumps({"home": home, "env": env, "network": network}).encode()
        with self._lock:
            try:
                socket.send_fds(self.sock, [job], list(fds))
            except OSError as e:
                raise InfraError(f"the sandbox zygote is gone ({e})") from None
            while True:
                reply = self._receive(30.0)
                if reply is None:
                    raise InfraError("the sandbox zygote did not start a sandbox")
                if "started" in reply:
                    return int(reply["started"])

    def exit_code(self, pid: int, timeout: float) -> int | None:
        """How sandbox `pid` ended (negative: the signal), or None if not within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while pid not in self.exits:
                left = deadline - time.monotonic()
                if left <= 0 or self._receive(left) is None:
                    return None
            return self.exits.pop(pid)

    def _receive(self, timeout: float) -> dict[str, int] | None:
        """The next message that is not an exit report (those are kept in `exits`); None on
        timeout or a closed socket."""
        self.sock.settimeout(timeout)
        try:
            raw = self.sock.recv(MAX_MESSAGE)
        except (TimeoutError, OSError):
            return None
        if not raw:
            return None
        message: dict[str, int] = json.loads(raw)
        if "exited" in message:
            self.exits[int(message["exited"])] = int(message["code"])
        return message

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)
