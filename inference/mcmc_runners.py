"""Where MCMC chains run (spawned child processes, or one thread) and the relay of their
messages into ChainProgress events and results."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from tqdm import tqdm

from inference.events import ChainProgress
from inference.mcmc_chain import _ChainResult, _ChainSpec, _run_chain
from inference.mcmc_kernels import _Stopped
from kiln.errors import InfraError, ModelError

log = logging.getLogger(__name__)

_STOP_WAIT_S = 10.0  # how long closing waits for a thread run to reach its next iteration


def _portable(e: BaseException) -> BaseException:
    """The error itself when it pickles (KilnErrors keep their fields), else its message."""
    try:
        pickle.dumps(e)
    except Exception:
        return ModelError(f"{type(e).__name__}: {e}")
    return e


def _chain_process(spec: _ChainSpec, chain: int, messages: Any) -> None:
    """Entry of a spawned child: run one chain, put ("done"|"error", chain, payload) last."""
    torch.set_num_threads(1)  # chains share the machine's cores
    # Pyro's (disabled) progress bar is a tqdm, whose default lock is a multiprocessing
    # semaphore; a chain terminated on cancel would leak it. A thread lock does here.
    tqdm.set_lock(threading.RLock())
    try:
        result = _run_chain(spec, chain, messages.put, None)
    except BaseException as e:
        messages.put(("error", chain, _portable(e)))
    else:
        messages.put(("done", chain, result))


def _chains_in_thread(
    spec: _ChainSpec, chains: int, messages: queue.Queue[Any], stop: threading.Event
) -> None:
    for chain in range(chains):
        try:
            result = _run_chain(spec, chain, messages.put, stop)
        except _Stopped:
            return
        except BaseException as e:
            messages.put(("error", chain, e))
            return
        messages.put(("done", chain, result))


class _Processes:
    """One spawned child process per chain."""

    parallel = "processes"

    def __init__(self, spec: _ChainSpec, chains: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe with torch threads and CUDA
        self.messages = ctx.Queue()
        self.procs = [
            ctx.Process(target=_chain_process, args=(spec, c, self.messages),
                        name=f"kiln-mcmc-chain-{c}", daemon=True)
            for c in range(chains)
        ]  # fmt: skip
        self.suspect: set[int] = set()

    def start(self) -> None:
        for proc in self.procs:
            proc.start()

    def check(self, finished: set[int]) -> None:
        """Raise when a chain's process ended without its result (seen twice, so a result
        still in the pipe is read first)."""
        for chain, proc in enumerate(self.procs):
            if chain in finished or proc.exitcode is None:
                continue
            if chain in self.suspect:
                code = proc.exitcode
                why = "killed, perhaps out of memory" if code == -9 else "crashed"
                # Retried (up to max_attempts): an OOM kill is the host's, not the model's.
                raise InfraError(f"chain {chain}'s process ended without its draws (exit code"
                                 f" {code}: {why})")  # fmt: skip
            self.suspect.add(chain)

    def stop(self, finished: set[int]) -> None:
        """Terminate chains still running; let those that sent their draws exit by themselves
        (so their exit handlers run), for a few seconds."""
        for chain, proc in enumerate(self.procs):
            if chain not in finished and proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            if proc.pid is None:
                continue  # never started
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            proc.close()
        self.messages.close()


class _Thread:
    """Chains one after another in a background thread, stopped through hook_fn."""

    parallel = "sequential"

    def __init__(self, spec: _ChainSpec, chains: int) -> None:
        self.messages: queue.Queue[Any] = queue.Queue()
        self.flag = threading.Event()
        self.thread = threading.Thread(
            target=_chains_in_thread, args=(spec, chains, self.messages, self.flag),
            name="kiln-mcmc", daemon=True,
        )  # fmt: skip

    def start(self) -> None:
        self.thread.start()

    def check(self, finished: set[int]) -> None:
        if not self.thread.is_alive() and self.messages.empty():
            raise RuntimeError("the MCMC thread ended without the draws of every chain")

    def stop(self, finished: set[int]) -> None:
        self.flag.set()
        if self.thread.ident is not None:
            self.thread.join(timeout=_STOP_WAIT_S)
            if self.thread.is_alive():
                log.warning("mcmc: chains thread still running %.0fs after stop", _STOP_WAIT_S)


def _relay(
    runner: _Processes | _Thread, chains: int, total: int, every_s: float,
    results: dict[int, _ChainResult],
) -> Iterator[ChainProgress]:  # fmt: skip
    """Yield ChainProgress as chains report it, and the progress of the chain that reported
    longest ago again when nothing came for `every_s` seconds; fill in `results`."""
    latest = {c: ChainProgress(c, 0, total, True, 0) for c in range(chains)}
    yielded = dict.fromkeys(range(chains), time.monotonic())
    quiet_s = every_s * 1.1  # a little over, so that a chain's own report usually comes first
    while len(results) < chains:
        wait = max(yielded.values()) + quiet_s - time.monotonic()
        try:
            kind, chain, payload = runner.messages.get(timeout=max(wait, 0.01))
        except queue.Empty:
            runner.check(set(results))
            if time.monotonic() - max(yielded.values()) >= quiet_s:
                chain = min(yielded, key=yielded.__getitem__)
                yielded[chain] = time.monotonic()
                yield latest[chain]
            continue
        if kind == "progress":
            latest[chain] = ChainProgress(chain, *payload)
            yielded[chain] = time.monotonic()
            yield latest[chain]
        elif kind == "done":
            results[chain] = payload
        else:
            raise payload
