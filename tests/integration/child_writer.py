"""A process that writes through Conductor under load, for crash and shutdown tests.

    python child_writer.py DB MODE
MODE ``feedback``: completions plus a user rating for each; prints ``ACK <rid> <rater>``
only after ``feedback`` returned (the durability contract's acknowledgement).
MODE ``complete``: completions only; prints ``DONE <rid>`` after each answer. On SIGTERM
it stops, closes Conductor (drains the queue) and exits 0.
"""

from __future__ import annotations

import signal
import sys

import msgspec

from conductor import Conductor, default_settings
from conductor.storage.sqlite import SQLiteStore


def main() -> None:
    db, mode = sys.argv[1], sys.argv[2]
    settings = default_settings()
    settings = msgspec.structs.replace(settings, storage=msgspec.structs.replace(
        settings.storage, snapshot_every_s=0.2))
    # A long batch interval keeps many rows queued, so the drain on SIGTERM matters.
    store = SQLiteStore(db, batch_interval_s=0.5 if mode == "complete" else 0.05)
    conductor = Conductor(settings, seed=1, log_store=store)
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    print("READY", flush=True)
    i = 0
    try:
        while not stopping:
            r = conductor.complete(f"request {i}", task_type=("classify", "chat")[i % 2])
            if mode == "feedback":
                rater = f"u{i % 3}"
                conductor.feedback(r.request_id, stars=1 + i % 5, rater=rater)
                print(f"ACK {r.request_id} {rater}", flush=True)
            else:
                print(f"DONE {r.request_id}", flush=True)
            i += 1
    finally:
        conductor.close()
    print(f"CLOSED {store.writer.rows_written}", flush=True)


if __name__ == "__main__":
    main()
