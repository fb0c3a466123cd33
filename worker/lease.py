"""LeaseKeeper: a thread that renews a running job's lease while its worker is alive."""

from __future__ import annotations

import contextvars
import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from db.claims import renew_lease

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews the lease every lease_s / 3 seconds, also while a step, the posterior summary or
    a prediction takes long. A worker killed with SIGKILL stops renewing, and the reaper puts
    its job back to queued once the lease expires."""

    def __init__(
        self, sessions: sessionmaker[Session], job_id: str, *, worker: str, lease_s: float
    ) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.worker = worker
        self.lease_s = lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()
        # The thread's log lines carry the job id of the context it was made in.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name=f"lease-{job_id}",
            daemon=True,
        )  # fmt: skip

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.lease_s)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                with self.sessions() as session:
                    held = renew_lease(
                        session, self.job_id, worker=self.worker, lease_s=self.lease_s
                    )
            except Exception as e:  # the database may blink; the next renewal retries
                log.warning("job %s: lease renewal failed: %s", self.job_id, e)
                continue
            if not held:
                log.warning("job %s: %s no longer holds the lease", self.job_id, self.worker)
                self.lost.set()
                return
