"""The zygote: `python -I -m worker.sandbox.zygote CONTROL_FD WORKER_PID`, one per worker
process, started with the sandbox's scrubbed environment. It imports torch, Pyro and Kiln's
inference once, runs nothing of any user's, and forks a fresh sandbox (worker/sandbox/child.py)
for each job the worker asks for, so a job starts in milliseconds instead of paying the
imports (and torch's first-step set-up) again.

Control socket (AF_UNIX, SOCK_SEQPACKET), JSON messages:
  worker -> zygote  {"home", "env", "network"} with three fds: request, frames, output
  zygote -> worker  {"ready": pid} once; {"started": pid} per job; {"exited": pid, "code": c}
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import sys
from typing import Any

from worker.sandbox.child import FRAMES_FD, REQUEST_FD, die_with_parent, run_job

MAX_MESSAGE = 1 << 20


def main(argv: list[str]) -> None:
    control = socket.socket(fileno=int(argv[1]))
    die_with_parent(int(argv[2]))
    import torch._dynamo  # noqa: F401  (the first optimiser step would import it: ~1.8 s)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    control.send(json.dumps({"ready": os.getpid()}).encode())
    while True:
        ready, _, _ = select.select([control.fileno(), wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(control)
        if control.fileno() in ready:
            message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 3)
            if not message:  # the worker is gone
                os._exit(0)
            job = json.loads(message)
            pid = os.fork()
            if pid == 0:
                _become_sandbox(fds, job, os.getppid())
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"started": pid}).encode())


def _reap(control: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        control.send(json.dumps({"exited": pid, "code": code}).encode())


def _become_sandbox(fds: list[int], job: dict[str, Any], zygote: int) -> None:
    """In the forked child: a session of its own, the job's pipes on fixed fds and nothing
    else open, its directory and environment; then the job. Never returns."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        die_with_parent(zygote)
        request, frames, output = (fcntl.fcntl(fd, fcntl.F_DUPFD, 16) for fd in fds)
        devnull = os.open(os.devnull, os.O_RDONLY)
        for source, target in ((devnull, 0), (output, 1), (output, 2), (request, REQUEST_FD),
                               (frames, FRAMES_FD)):  # fmt: skip
            os.dup2(source, target)
        os.closerange(FRAMES_FD + 1, os.sysconf("SC_OPEN_MAX"))
        os.chdir(job["home"])
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = ["kiln-sandbox"]
        run_job(str(job["network"]))
    finally:
        os._exit(70)


if __name__ == "__main__":
    main(sys.argv)
