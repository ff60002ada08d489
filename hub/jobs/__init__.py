"""The job worker: runs what the job queue (hub.db.jobs) holds.

- `kinds`: every kind of job, what it does and in which order it runs ("what runs when").
- `job`: a job as its handler sees it, how a handler declares its kind (`@handles`), and
  how it reports failure (`RetryLater`, `PermanentFailure`, or any ExternalError).
- `worker`: the loop: claim, run in per-key order, complete or fail, dead-letter.
- `handover`: the SQLite shortcut of jobs going from the storing transaction straight to
  the worker, and why.
"""
