"""The worker's side of the sandbox: start the child, send the request, relay its events,
watch cancel and the wall clock, capture its output, and kill it (and all it started).

The child gets a scrubbed environment (no KILN_* settings, no secrets), a temporary working
and home directory removed afterwards, and two pipes; it is the leader of its own process
group, so one signal ends it and any chain processes it spawned.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from inference.events import Event
from kiln.errors import Cancelled, ModelError
from kiln.settings import Settings
from worker.sandbox.forks import Zygote
from worker.sandbox.messages import frame_error, frame_event
from worker.sandbox.wire import Frame, WireError, read_frame, write_frame

log = logging.getLogger(__name__)

# Variables the child may keep: locale, threads, which GPUs. Nothing else of the worker's.
PASSED_ENV = (
    "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH",
)  # fmt: skip
CANCEL_POLL_S = 1.0
PR_SET_DUMPABLE = 4
EXIT_GRACE_S = 10.0
_SIGNAL_NAMES = {
    signal.SIGSEGV: "a segmentation fault (SIGSEGV)",
    signal.SIGABRT: "an abort (SIGABRT)",
    signal.SIGBUS: "a bus error (SIGBUS)",
    signal.SIGILL: "an illegal instruction (SIGILL)",
    signal.SIGFPE: "a floating-point exception (SIGFPE)",
}


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """The child's resource limits and network mode, from the worker's settings."""

    memory_mb: int
    cpu_s: int
    wall_s: int
    open_files: int
    processes: int
    file_mb: int
    output_bytes: int
    network: str
    max_message_bytes: int

    @classmethod
    def from_settings(cls, s: Settings) -> SandboxLimits:
        return cls(
            memory_mb=s.sandbox_memory_mb, cpu_s=s.sandbox_cpu_s, wall_s=s.sandbox_wall_s,
            open_files=s.sandbox_open_files, processes=s.sandbox_processes,
            file_mb=s.sandbox_file_mb, output_bytes=s.sandbox_output_bytes,
            network=s.sandbox_network, max_message_bytes=s.sandbox_max_message_mb * 1024 * 1024,
        )  # fmt: skip

    def for_child(self) -> dict[str, int]:
        return {"memory_mb": self.memory_mb, "cpu_s": self.cpu_s, "open_files": self.open_files,
                "processes": self.processes, "file_mb": self.file_mb}  # fmt: skip


class Output:
    """The child's stdout and stderr together, keeping the last `cap` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap, self.dropped = cap, 0
        self._buf = bytearray()
        self._lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        with self._lock:
            self._buf += chunk
            if len(self._buf) > self.cap:
                cut = len(self._buf) - self.cap
                self.dropped += cut
                del self._buf[:cut]

    def text(self) -> str:
        with self._lock:
            body = self._buf.decode("utf-8", errors="replace")
        return (f"[{self.dropped} earlier bytes not kept]\n" if self.dropped else "") + body

    def tail(self, lines: int = 6) -> str:
        kept = [line for line in self.text().splitlines() if line.strip()]
        return "\n".join(kept[-lines:])


def protect_worker() -> None:
    """Make this process undumpable: its /proc/PID/environ, memory and ptrace then belong to
    root, so a sandbox running as the same OS user cannot read the worker's database URL
    there. Inherited by forked pool processes; idempotent; Linux only (elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError) as e:
        log.warning("could not make the worker undumpable: %s", e)


def child_env(home: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=home, TMPDIR=home,
               PYTHONDONTWRITEBYTECODE="1", MALLOC_ARENA_MAX="2")  # fmt: skip
    env.setdefault("LANG", "C.UTF-8")
    return env


class Sandbox:
    """One run of a user's model file in a child process. `run` is a generator of the child's
    events that returns its result frame; closing it (a cancel seen by the Sink, a lost lease)
    kills the child. `output` holds what the child printed; `network` what isolation it got."""

    def __init__(
        self,
        limits: SandboxLimits,
        job_id: str,
        cancelled: Callable[[], bool] = lambda: False,
        on_output: Callable[[bytes], None] | None = None,
    ) -> None:
        self.limits, self.job_id, self.cancelled = limits, job_id, cancelled
        self.on_output = on_output  # each chunk of output as it comes (the job's own log)
        self.output = Output(limits.output_bytes)
        self.network = "unknown"
        self._zygote: Zygote | None = None
        self._pid: int | None = None
        self._code: int | None = None  # how it ended, once the zygote said

    def run(
        self, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> Generator[Event, None, Frame]:
        protect_worker()
        zygote = Zygote.get(child_env(tempfile.gettempdir()))
        home = tempfile.mkdtemp(prefix=f"kiln-sandbox-{self.job_id[:12]}-")
        req_r, req_w = os.pipe()
        frames_r, frames_w = os.pipe()
        out_r, out_w = os.pipe()
        threads: list[threading.Thread] = []
        frames: queue.Queue[Frame | BaseException | None] = queue.Queue(maxsize=8)
        try:
            self._zygote = zygote
            self._pid = zygote.spawn(home, child_env(home), self.limits.network,
                                     (req_r, frames_w, out_w))  # fmt: skip
            for fd in (req_r, frames_w, out_w):
                os.close(fd)
            req_r = frames_w = out_w = -1
            threads.append(_thread(self._pump_output, os.fdopen(out_r, "rb")))
            out_r = -1
            threads.append(_thread(self._read_frames, os.fdopen(frames_r, "rb"), frames))
            frames_r = -1
            _thread(self._send, os.fdopen(req_w, "wb"), header, arrays)
            req_w = -1
            result = yield from self._relay(frames)
            self._wait_exit(result)
            return result
        finally:
            self.kill()
            for fd in (req_r, req_w, frames_r, frames_w, out_r, out_w):
                if fd >= 0:
                    os.close(fd)
            deadline = time.monotonic() + 5  # a process that left the group may hold a pipe
            for t in threads:
                while t.is_alive() and time.monotonic() < deadline:
                    _drain(frames)  # a reader blocked on a full queue: let it finish
                    t.join(timeout=0.1)
            shutil.rmtree(home, ignore_errors=True)

    def _relay(
        self, frames: queue.Queue[Frame | BaseException | None]
    ) -> Generator[Event, None, Frame]:
        started = time.monotonic()
        next_poll = started + CANCEL_POLL_S
        while True:
            try:
                item = frames.get(timeout=0.2)
            except queue.Empty:
                item = _NOTHING
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + CANCEL_POLL_S
                if self._cancel_requested():
                    self.kill()
                    raise Cancelled(f"job {self.job_id}: cancelled by the user")
            if self.limits.wall_s and now - started > self.limits.wall_s:
                self.kill()
                raise ModelError(
                    f"the model ran past its wall-clock limit of {self.limits.wall_s} s"
                    " (KILN_SANDBOX_WALL_S on the worker) and was stopped"
                )
            if item is _NOTHING:
                continue
            if item is None:  # the child closed its end without a result
                raise self._died()
            if isinstance(item, BaseException):
                self.kill()
                raise ModelError(f"the model's process sent a malformed message ({item})")
            if item.type == "event":
                try:
                    event = frame_event(item)
                except WireError as e:
                    self.kill()
                    raise ModelError(f"the model's process sent a malformed event ({e})") from None
                yield event
            elif item.type == "hello":
                self.network = str(item.header.get("network", "unknown"))[:200]
            elif item.type == "result":
                return item
            elif item.type == "error":
                self._wait_exit(item)  # it exits next: let its last output arrive
                raise frame_error(item)
            else:
                self.kill()
                raise ModelError(f"the model's process sent an unknown message {item.type[:40]!r}")

    def _cancel_requested(self) -> bool:
        try:
            return self.cancelled()
        except Exception as e:  # the database briefly away: the Sink decides about that
            log.warning("job %s: could not read the cancel flag: %s", self.job_id, e)
            return False

    def _exit_code(self, timeout: float) -> int | None:
        if self._code is None and self._zygote is not None and self._pid is not None:
            self._code = self._zygote.exit_code(self._pid, timeout)
        return self._code

    def _wait_exit(self, result: Frame) -> None:
        code = self._exit_code(EXIT_GRACE_S)
        if code not in (0, None):  # None: it sent its result; `kill` ends it
            log.warning("job %s: the sandbox exited with %s after its result", self.job_id, code)

    def _died(self) -> ModelError:
        code = self._exit_code(EXIT_GRACE_S)
        if code is None:
            self.kill()
            code = self._code if self._code is not None else -signal.SIGKILL
        tail = self.output.tail()
        said = f"; its last output:\n{tail}" if tail else ""
        return ModelError(self._describe_exit(code) + said)

    def _describe_exit(self, code: int) -> str:
        lim = self.limits
        if code >= 0:
            return (f"the model's process exited with status {code} before it finished"
                    " (os._exit, or a crash in native code)")  # fmt: skip
        sig = -code
        if sig == signal.SIGXCPU:
            return (f"the model used up its CPU time limit of {lim.cpu_s} s (KILN_SANDBOX_CPU_S"
                    " on the worker) and was stopped")  # fmt: skip
        if sig == signal.SIGXFSZ:
            return (f"the model wrote a file past the limit of {lim.file_mb} MB"
                    " (KILN_SANDBOX_FILE_MB on the worker)")  # fmt: skip
        if sig in _SIGNAL_NAMES:
            return f"the model's process crashed with {_SIGNAL_NAMES[signal.Signals(sig)]}"
        if sig == signal.SIGKILL:
            return (f"the model's process was killed (SIGKILL): out of memory? The sandbox allows"
                    f" {lim.memory_mb} MB (KILN_SANDBOX_MEMORY_MB on the worker)")  # fmt: skip
        return f"the model's process was killed by signal {signal.Signals(sig).name}"

    def kill(self) -> None:
        """SIGKILL the sandbox's whole process group, unless it has ended (idempotent)."""
        if self._pid is None or self._code is not None:
            return
        try:
            os.killpg(self._pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._exit_code(5.0) is None:
            log.error("job %s: sandbox %d did not die", self.job_id, self._pid)

    def _pump_output(self, stream: IO[bytes]) -> None:
        with stream:
            while chunk := stream.read1(65536):  # type: ignore[attr-defined]
                self.output.add(chunk)
                if self.on_output is not None:
                    self.on_output(chunk)

    def _read_frames(
        self, src: IO[bytes], frames: queue.Queue[Frame | BaseException | None]
    ) -> None:
        with src:
            try:
                while (frame := read_frame(src, self.limits.max_message_bytes)) is not None:
                    frames.put(frame)
                    if frame.type in ("result", "error"):
                        break
                else:
                    frames.put(None)
            except (WireError, OSError, ValueError) as e:
                frames.put(e if isinstance(e, WireError) else WireError(str(e)))

    def _send(
        self, out: IO[bytes], header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> None:
        try:
            with out:
                write_frame(out, {"type": "request", **header, "limits": self.limits.for_child()},
                            arrays)  # fmt: skip
        except (BrokenPipeError, OSError) as e:  # the child died first: _died says how
            log.info("job %s: the sandbox did not take its request: %s", self.job_id, e)


_NOTHING: Any = object()


def _drain(frames: queue.Queue[Any]) -> None:
    try:
        while True:
            frames.get_nowait()
    except queue.Empty:
        pass


def _thread(target: Callable[..., None], *args: Any) -> threading.Thread:
    t = threading.Thread(target=target, args=args, daemon=True, name=f"sandbox-{target.__name__}")
    t.start()
    return t
