"""A private PostgreSQL cluster for the fault drills: its own port and data directory under /tmp, which a
drill may stop and start while the servers it started go on running. Never the machine's shared cluster."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.conftest import free_port

OWNER = "postgres"  # initdb refuses to run as root: as root the cluster is run by this user


def postgres_bindir():
    """The directory of the newest installed PostgreSQL server binaries (Debian keeps them per version under
    /usr/lib/postgresql), or None if there are none."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def can_run_postgres():
    return postgres_bindir() is not None and (os.geteuid() != 0 or shutil.which("runuser") is not None)


class PostgresServer:
    """A throw-away cluster: trust authentication on 127.0.0.1, no fsync (nothing in it outlives the run)."""

    def __init__(self):
        self.bindir = postgres_bindir()
        self.directory = Path(tempfile.mkdtemp(prefix="supportsite-drill-pg-"))
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.directory, OWNER, OWNER)

    def url(self, database="postgres"):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program, *args):
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OWNER, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.directory)

    def create(self):
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self.start()

    def start(self):
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory}"
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "start")
        return self

    def stop(self):
        """A fast shutdown: open sessions are ended and their transactions rolled back, as in a restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def is_running(self):
        try:
            self._run("pg_ctl", "-D", str(self.data), "status")
        except subprocess.CalledProcessError:
            return False
        return True

    def destroy(self):
        if self.is_running():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def query(self, database, sql, params=()):
        """The rows of one statement (none for a command), on a connection of its own."""
        with psycopg.connect(self.url(database).replace("postgres://", "postgresql://"), autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
