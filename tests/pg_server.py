"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` package (initdb + pg_ctl)
in a temporary folder, listening on 127.0.0.1 only, stopped and deleted at the end."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

USER, PASSWORD = "tinycnn", "pg-s3cret-pw"


def binaries() -> str | None:
    """The folder holding initdb and pg_ctl (on PATH or Debian's /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(found))
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(folder, "initdb")):
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """initdb refuses to run as root: as root the server runs as the `postgres` user."""

    def __init__(self, bindir: str):
        self.bindir, self.port = bindir, _free_port()
        self.dir = tempfile.mkdtemp(prefix="tinycnn-pg-")
        self.data = os.path.join(self.dir, "data")
        self.as_user = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")  # Debian's package creates it
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.dir, 0o700)

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, text=True,
                       timeout=120)

    def start(self) -> "Server":
        pwfile = os.path.join(self.dir, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD)
        if self.as_user:
            shutil.chown(pwfile, "postgres")
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", USER,
                  f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8")
        self.resume()
        self.create_database("tinycnn")
        return self

    def resume(self) -> None:
        """Start the server on its data folder and port (again, after pause)."""
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", opts, "-l",
                  os.path.join(self.dir, "log"), "-w", "start")

    def pause(self) -> None:
        """Stop the server as a crash would (-m immediate), keeping its data for resume."""
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", "immediate",
                  "stop")

    def url(self, db: str = "tinycnn", password: str = PASSWORD, driver: str = "") -> str:
        scheme = "postgresql" + (f"+{driver}" if driver else "")
        return f"{scheme}://{USER}:{password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> None:
        import psycopg
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        try:
            self.pause()
        finally:
            time.sleep(0.2)
            shutil.rmtree(self.dir, ignore_errors=True)
