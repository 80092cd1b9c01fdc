"""A rater in a tight loop, as its own process: the crash test SIGKILLs it at random moments.

Starting Python and importing SQLAlchemy costs ~0.6 s, so this is a tiny fork server: it
imports once, then on each "go BATCH_SIZE" line from stdin forks a child that opens its own
database connection and rates in a loop until it is killed. It prints "ready PID" when the
child has committed its first batch, and "exit PID STATUS" once it has reaped it.

Usage: python -m tests.platform.billing.rate_worker DATABASE_URL
"""

from __future__ import annotations

import os
import sys

from aicloud.platform import billing
from aicloud.shared.db import Database


def _child(url: str, batch_size: int, ready_fd: int) -> None:
    db = Database(url)  # a fresh engine: nothing is shared with the parent's connections
    first = True
    while True:
        with db.transaction() as session:
            billing.rate_batch(session, batch_size=batch_size)
        if first:  # busy from here on: the kill lands amid the work, not during start-up
            os.write(ready_fd, b"r")
            os.close(ready_fd)
            first = False


def main(url: str) -> None:
    for line in sys.stdin:
        batch_size = int(line.split()[1])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _child(url, batch_size, w)
            finally:
                os._exit(1)
        os.close(w)
        os.read(r, 1)
        os.close(r)
        print(f"ready {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {status}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
