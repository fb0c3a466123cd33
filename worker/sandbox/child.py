"""The sandbox process, forked from the zygote (worker/sandbox/zygote.py) for one job.

It cuts itself off the network first (while it has one thread), reads the worker's request,
sets its resource limits, runs the user's model file (inference.usertasks) and writes the
events and the result back as frames (worker/sandbox/wire.py). It has no database or broker
URL and opens no connection: what it sends is all the worker learns of it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

from worker.sandbox.messages import error_frame
from worker.sandbox.tasks import run_task
from worker.sandbox.wire import read_frame, write_frame

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1
# A forked sandbox finds its pipes here (the zygote moves them before anything else runs).
REQUEST_FD, FRAMES_FD = 3, 4


def cut_network(mode: str) -> str:
    """Move into a network namespace of our own (no interfaces up: nothing is reachable).
    Returns `cut`, or `open (...)` saying why not."""
    if mode == "off":
        return "open (KILN_SANDBOX_NETWORK=off)"
    libc = ctypes.CDLL(None, use_errno=True)
    # As root a network namespace is enough; otherwise a user namespace first makes us root
    # in it (where the kernel allows unprivileged user namespaces).
    tries = [CLONE_NEWNET] if os.geteuid() == 0 else []
    tries.append(CLONE_NEWUSER | CLONE_NEWNET)
    reason = ""
    for flags in tries:
        if libc.unshare(flags) == 0:
            return "cut"
        reason = os.strerror(ctypes.get_errno())
    return f"open (no network namespace: {reason})"


def apply_limits(limits: dict[str, int], cuda: bool) -> None:
    """Resource limits for this process and what it starts; 0 leaves a limit off."""
    import resource

    mb = 1024 * 1024
    wanted = [
        (resource.RLIMIT_CPU, limits.get("cpu_s", 0), 1),
        (resource.RLIMIT_NOFILE, limits.get("open_files", 0), 1),
        (resource.RLIMIT_NPROC, limits.get("processes", 0), 1),
        (resource.RLIMIT_FSIZE, limits.get("file_mb", 0), mb),
        (resource.RLIMIT_CORE, 0, 1),
    ]
    if not cuda:  # CUDA reserves far more address space than it uses
        wanted.append((resource.RLIMIT_AS, limits.get("memory_mb", 0), mb))
    for which, value, unit in wanted:
        if value or which == resource.RLIMIT_CORE:
            _, hard = resource.getrlimit(which)
            soft = value * unit
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            # CPU: the soft limit sends SIGXCPU (we report it); the hard one kills 5 s later.
            new_hard = soft + 5 if which == resource.RLIMIT_CPU and value else soft
            if hard != resource.RLIM_INFINITY:
                new_hard = min(new_hard, hard)
            resource.setrlimit(which, (soft, new_hard))


def die_with_parent(parent_pid: int) -> None:
    """When our parent dies (SIGKILL included), end this process group: the sandbox and any
    chain processes it started. The kernel sends SIGTERM at the parent's death; the handler
    kills the whole group."""
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the line above
        os.killpg(0, signal.SIGKILL)


def run_job(network_mode: str) -> None:
    """The sandbox's life after the fork (single-threaded, a session of its own, stdout and
    stderr on the output pipe, the request on REQUEST_FD, frames out on FRAMES_FD); never
    returns."""
    network = cut_network(network_mode)  # while this process has one thread
    out = os.fdopen(FRAMES_FD, "wb")
    with os.fdopen(REQUEST_FD, "rb") as inp:
        request = read_frame(inp, max_payload=1 << 62)  # the worker's own bytes
    if request is None:
        os._exit(2)
    header = request.header
    limits: dict[str, int] = header["limits"]
    if network != "cut" and network_mode == "require":
        message = (
            f"the sandbox could not cut the network ({network}) and KILN_SANDBOX_NETWORK"
            " is `require`: run the worker as root or where user namespaces are allowed"
        )
        write_frame(out, {"type": "error", "error": "UserError", "message": message})
        os._exit(0)
    try:
        apply_limits(limits, cuda=str(header.get("device", "cpu")).startswith("cuda"))
        write_frame(out, {"type": "hello", "network": network, "pid": os.getpid()})
        run_task(request, out, before_result=_flush)
    except BaseException as e:  # the user's code may raise anything, SystemExit included
        _flush()  # what it printed reaches the worker before the error does
        write_frame(out, error_frame(e, _memory_note(e, limits)))
    _flush()
    os._exit(0)  # no atexit hooks a model may have registered


def _memory_note(e: BaseException, limits: dict[str, Any]) -> str:
    chain: list[BaseException] = []
    cause: BaseException | None = e  # the model's exception, and what Kiln wrapped it in
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__
    text = " ".join(f"{type(c).__name__} {c}" for c in chain)
    if any(isinstance(c, MemoryError) for c in chain) or "can't allocate memory" in text:
        mb = limits.get("memory_mb", 0)
        if mb:
            return (f" (the sandbox allows {mb} MB of address space: KILN_SANDBOX_MEMORY_MB on"
                    " the worker)")  # fmt: skip
    return ""


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
