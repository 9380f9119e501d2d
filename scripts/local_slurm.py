#!/usr/bin/env python3
"""A single-node Slurm cluster with job accounting, in a temp folder: this host is the only node
(all its CPUs, partition ``debug``).

    python scripts/local_slurm.py start [FOLDER]   # prints `export SLURM_CONF=FOLDER/slurm.conf`
    python scripts/local_slurm.py stop FOLDER      # cancels its jobs, stops its daemons, removes FOLDER

``munged`` (as the ``munge`` user), ``mariadbd``, ``slurmdbd``, ``slurmctld`` and ``slurmd`` run in the
foreground as processes started here, on free local ports, with their key, database, state, spool,
logs and sockets in FOLDER. Their PIDs, each with the process's start time (so a recycled PID is
never signalled), are kept in FOLDER/pids; ``stop`` signals those and nothing else, plus any
leftover process carrying this cluster's marker in its environment (a job step's ``slurmstepd``).
Nothing outside FOLDER is touched: Slurm's clients (and submitit) find the cluster through
``SLURM_CONF``. ``sacct`` works (slurmdbd on MariaDB), as on a production cluster.

Needs root and Debian 12's packages (Slurm 22.05, MariaDB 10.11), see :data:`PACKAGES`. The
``slurm`` tests use it through the ``slurm_cluster`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: what ``apt-get install`` needs (``.ci/run`` installs them)
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "slurmdbd", "munge", "mariadb-server")
#: in start order; stopped in reverse
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
TOOLS = ("munge", "unmunge", "mariadb-install-db", "sbatch", "squeue", "sacct", "sacctmgr", "scontrol",
         "scancel", "sinfo")
#: set in the daemons' environment (slurmstepd inherits it): ``stop`` finds leftovers by it
MARKER = "LOCAL_SLURM_FOLDER"
CLUSTER = "localslurm"
PARTITION = "debug"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is None and Path("/usr/sbin", name).exists():
        found = str(Path("/usr/sbin", name))
    return found


def missing() -> str | None:
    """Why this machine cannot run the cluster, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (slurmd runs each job as its submitting user)"
    absent = [name for name in (*DAEMONS, *TOOLS) if _binary(name) is None]
    if absent:
        return f"needs {', '.join(absent)}: apt-get install {' '.join(PACKAGES)}"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "needs the munge user: apt-get install munge"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def slurm_conf(folder: Path, node: str, cpus: int, memory_mb: int, ports: dict[str, int]) -> str:
    """slurm.conf: no cgroups, accounting through slurmdbd, quick kills and requeues."""
    munge = f"{folder}/munge/socket"
    return f"""\
ClusterName={CLUSTER}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ports['slurmctld']}
SlurmdPort={ports['slurmd']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it starts again (default 120 s)
AuthInfo=socket={munge},cred_expire=10
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['slurmdbd']}
# for slurmdbd connections this names the munge socket
AccountingStoragePass={munge}
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
KillWait=2
MinJobAge=3600
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def slurmdbd_conf(folder: Path, node: str, ports: dict[str, int]) -> str:
    return f"""\
AuthType=auth/munge
AuthInfo=socket={folder}/munge/socket
DbdHost={node}
DbdAddr=127.0.0.1
DbdPort={ports['slurmdbd']}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={ports['mariadbd']}
StorageUser=root
StorageLoc=slurm_acct_db
LogFile={folder}/log/slurmdbd.log
PidFile={folder}/slurmdbd.pid
"""


#: MariaDB settings: slurmdbd logs an error with a smaller buffer pool or lock wait; a small redo log
MARIADB_OPTIONS = ("--no-defaults", "--innodb-buffer-pool-size=256M", "--innodb-log-file-size=16M",
                   "--innodb-lock-wait-timeout=900")


class LocalSlurm:
    """The cluster in ``folder``: :meth:`start` makes one, ``LocalSlurm(folder).stop()`` ends it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.conf = self.folder / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm's clients (sbatch, sacct, submitit) to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def client(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def accounted_jobs(self) -> list[tuple[str, str]]:
        """``(job id, state)`` of every job the accounting database holds, array tasks as ``123_4``."""
        out = self.client("sacct", "--allusers", "-X", "-n", "-P", "-S", "2000-01-01", "-o", "JobID,State")
        return [tuple(line.split("|", 1)) for line in out.splitlines() if line]

    @classmethod
    def start(cls, folder: Path | None = None, timeout: float = 90) -> "LocalSlurm":
        """Write the configs and start the daemons; return once the node is idle.

        If a daemon does not come up, everything started is stopped and the error names the daemon
        and shows the end of its log."""
        reason = missing()
        if reason:
            raise RuntimeError(f"cannot start a local Slurm: {reason}")
        cluster = cls(Path(folder or tempfile.mkdtemp(prefix="slurm-")))
        if cluster.daemons():
            raise RuntimeError(f"{cluster.folder} already holds a cluster: stop it first")
        try:
            cluster._start(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start(self, timeout: float) -> None:
        ports = {name: _free_port() for name in ("mariadbd", "slurmdbd", "slurmctld", "slurmd")}
        self._write_files(ports)
        munge = f"--socket={self.folder}/munge/socket"
        self._spawn("munged", ["munged", "--foreground", munge, *(
            f"--{kind}-file={self.folder}/munge/munged.{kind}" for kind in ("key", "pid", "log", "seed"))],
            user="munge", group="munge")
        self._wait("munged", timeout, lambda: _munge_round_trip(munge))
        db = self.folder / "db"
        self._setup("mariadb-install-db", ["mariadb-install-db", *MARIADB_OPTIONS, f"--datadir={db}", "--user=root",
                                           "--auth-root-authentication-method=normal", "--skip-test-db"])
        self._spawn("mariadbd", ["mariadbd", *MARIADB_OPTIONS, f"--datadir={db}", "--user=root",
                                 "--bind-address=127.0.0.1", f"--port={ports['mariadbd']}", f"--socket={db}/socket",
                                 f"--pid-file={db}/mariadbd.pid", f"--log-error={self.folder}/log/mariadbd.log"])
        self._wait("mariadbd", timeout, lambda: _accepts(ports["mariadbd"]))
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait("slurmdbd", timeout, lambda: _accepts(ports["slurmdbd"]))
        self._setup("sacctmgr", ["sacctmgr", "-i", "add", "cluster", CLUSTER])
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait("slurmctld", timeout, lambda: "is UP" in self.client("scontrol", "ping", check=False))
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])
        self._wait("slurmd", timeout,
                   lambda: self.client("sinfo", "-h", "-o", "%T", check=False).strip() == "idle")

    def _write_files(self, ports: dict[str, int]) -> None:
        munge_user = pwd.getpwnam("munge")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # munged, as the munge user, reaches its folder through this one
        for sub in ("state", "spool", "log", "db", "munge"):
            (self.folder / sub).mkdir(exist_ok=True)
        munge = self.folder / "munge"
        munge.chmod(0o755)  # munged wants its socket's folder searchable by all
        key = munge / "munged.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (munge, key):
            os.chown(path, munge_user.pw_uid, munge_user.pw_gid)
        self.conf.write_text(slurm_conf(self.folder, self.node, os.cpu_count() or 1, _memory_mb(), ports))
        dbd = self.folder / "slurmdbd.conf"  # slurmdbd reads it beside $SLURM_CONF; it must be private
        dbd.write_text(slurmdbd_conf(self.folder, self.node, ports))
        dbd.chmod(0o600)

    def _setup(self, name: str, command: list[str]) -> None:
        """Run a one-off setup command; its output goes to log/NAME.out."""
        with open(self.folder / "log" / f"{name}.out", "ab") as log:
            done = subprocess.run(command, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{name} failed ({done.returncode}); end of {log.name}:\n{self._tail(name)}")

    def _spawn(self, name: str, command: list[str], **kwargs) -> None:
        with open(self.folder / "log" / f"{name}.out", "ab") as log:
            process = subprocess.Popen([_binary(command[0]), *command[1:]], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**self.env, MARKER: str(self.folder)}, **kwargs)
        with open(self.folder / "pids", "a") as pids:
            pids.write(f"{name} {process.pid} {start_time(process.pid)}\n")

    def _wait(self, name: str, timeout: float, ready) -> None:
        """Poll ``ready()`` until true; raise with the daemon's log if it exits or times out."""
        pid, started = self.daemons()[name]
        deadline = time.monotonic() + timeout
        while not ready():
            if start_time(pid) != started:
                raise RuntimeError(f"{name} exited while starting; end of its log:\n{self._tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s; end of its log:\n{self._tail(name)}")
            time.sleep(0.2)

    def _tail(self, name: str, lines: int = 20) -> str:
        logs = [self.folder / "log" / f"{name}.out", self.folder / "log" / f"{name}.log",
                self.folder / "munge" / f"{name}.log"]
        return "\n".join(line for path in logs if path.is_file()
                         for line in path.read_text(errors="replace").splitlines()[-lines:])

    def daemons(self) -> dict[str, tuple[int, str]]:
        """Name -> (PID, start time) of each daemon started here (FOLDER/pids)."""
        path = self.folder / "pids"
        if not path.is_file():
            return {}
        return {name: (int(pid), started) for name, pid, started in
                (line.split() for line in path.read_text().splitlines())}

    def stop(self, timeout: float = 60) -> list[str]:
        """Cancel every job, stop the daemons started here (Slurm's, then MariaDB and munged), then
        end any process still carrying this cluster's marker. Returns those that needed SIGKILL."""
        pids = self.daemons()
        pid, started = pids.get("slurmctld", (0, None))
        if started is not None and start_time(pid) == started:
            self._cancel_jobs(timeout / 2)
        killed = []
        for group in (("slurmd", "slurmctld", "slurmdbd"), ("mariadbd", "munged")):
            killed += _end({name: pids[name] for name in group if name in pids}, timeout / 4)
        return killed + _end({f"pid {pid}": (pid, start_time(pid)) for pid in self.marked_processes()}, timeout / 4)

    def _cancel_jobs(self, timeout: float) -> None:
        """scancel every pending or running job and wait (up to ``timeout``) until none is left."""
        def active() -> list[str]:
            return self.client("squeue", "-h", "-o", "%A", check=False).split()

        if active():
            self.client("scancel", *sorted(set(active())), check=False)
        deadline = time.monotonic() + timeout
        while active() and time.monotonic() < deadline:
            time.sleep(0.5)

    def marked_processes(self) -> list[int]:
        """Processes other than this one whose environment carries this cluster's marker."""
        needle = f"\0{MARKER}={self.folder}\0".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if needle in b"\0" + (entry / "environ").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found


def _munge_round_trip(socket_option: str) -> bool:
    """Whether munged encodes a credential and decodes it back."""
    credential = subprocess.run(["munge", "-n", socket_option], capture_output=True)
    return credential.returncode == 0 and subprocess.run(
        ["unmunge", socket_option], input=credential.stdout, capture_output=True).returncode == 0


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _end(processes: dict[str, tuple[int, str | None]], timeout: float) -> list[str]:
    """SIGTERM each ``name: (pid, start time)`` that is still that process, SIGKILL those left after
    ``timeout`` seconds; the names that needed SIGKILL."""
    def alive(pid: int, started: str | None) -> bool:
        try:  # collect it if it is our child, else it would stay a zombie with its start time
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return started is not None and start_time(pid) == started

    def running() -> dict[str, tuple[int, str | None]]:
        return {name: process for name, process in processes.items() if alive(*process)}

    for pid, _ in running().values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    stubborn = running()
    for pid, _ in stubborn.values():
        os.kill(pid, signal.SIGKILL)
    while running():
        time.sleep(0.1)
    return list(stubborn)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("start", "stop") or len(argv) > 2 or (argv[0] == "stop" and len(argv) != 2):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    if argv[0] == "start":
        print(f"export SLURM_CONF={LocalSlurm.start(Path(argv[1]) if len(argv) > 1 else None).conf}")
        return 0
    cluster = LocalSlurm(Path(argv[1]))
    killed = cluster.stop()
    shutil.rmtree(cluster.folder)
    print(f"stopped and removed {cluster.folder}" + (f" (SIGKILL: {', '.join(killed)})" if killed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
