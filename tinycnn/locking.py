"""An exclusive lock on a file for one block: SQLite's first opening, the results file."""


class file_lock:
    """An exclusive lock on `path` for one block (POSIX; elsewhere the retries above serve)."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self.f = None
        try:
            import fcntl
            self.f = open(self.path, "a")
            fcntl.flock(self.f, fcntl.LOCK_EX)
        except (ImportError, OSError):  # no fcntl, or a read-only folder: reading needs no lock
            pass
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()  # releases the lock
