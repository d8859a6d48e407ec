"""A real one-node Slurm cluster on localhost, for tests/test_cluster_slurm.py (run by `make test-cluster`).

Debian's packages, started from a private directory with their own configs, sockets and ports, all in
the foreground as children of this process, and stopped again (no system service is touched):

    munged (auth) → mariadbd (accounting database) → slurmdbd → slurmctld → slurmd

Accounting is real (slurmdbd on MariaDB) because snakemake-executor-plugin-slurm asks `sacct` for job
states by default (the profile asks squeue; see its comment), and Slurm 22.05 answers `sacct` only from
slurmdbd. Clients find the config through
SLURM_CONF and, inside jobs (the plugin's job step drops every SLURM_* variable before its `srun`), through
the default path /etc/slurm/slurm.conf: a symlink to this cluster's config while it runs, removed at the
end. A machine with its own /etc/slurm/slurm.conf is left alone (ForeignSlurmConfig). The node declares 16 CPUs and
64 GB (`SlurmdParameters=config_overrides`) so the jobs of workflow/profiles/slurm (8 threads, 32 GB)
fit on a small machine, two model jobs at a time; the tiny test model needs a fraction of that.

    python tests/slurm_cluster.py install   # apt-get install the packages (root, apt)
    python tests/slurm_cluster.py check     # exit 0 when every binary is there
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "slurmdbd", "munge", "mariadb-server"]
BINARIES = ["munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sbatch", "squeue",
            "sacct", "sacctmgr", "scancel", "sinfo"]
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if which(b) is None]


def install() -> None:
    """apt-get install the packages (root and apt-get needed); nothing is started."""
    if not missing_binaries():
        return
    if os.geteuid() != 0 or not which("apt-get"):
        raise SystemExit(f"installing {' '.join(PACKAGES)} needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(apt, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(apt, env=env, check=True)
    if missing_binaries():
        raise SystemExit(f"still missing after apt-get install: {missing_binaries()}")


SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# crosstrace test cluster (tests/slurm_cluster.py)"


class ForeignSlurmConfig(RuntimeError):
    """/etc/slurm/slurm.conf exists and is not ours: this machine has a Slurm of its own."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, cond, timeout: float = 60, procs=()) -> None:
    end = time.monotonic() + timeout
    while not cond():
        for name, p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} while waiting for {what}")
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class SlurmCluster:
    """Start with ``with SlurmCluster(tmpdir) as c:``; clients need ``c.env`` (it sets SLURM_CONF)."""

    def __init__(self, root: Path, cpus: int = 16, mem_mb: int = 64000, cluster: str = "crosstrace-test"):
        self.root, self.cpus, self.mem_mb, self.cluster = Path(root), cpus, mem_mb, cluster
        self.host = socket.gethostname().split(".")[0]
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf),
                    "PATH": os.pathsep.join([os.environ.get("PATH", ""), *SBIN])}

    # ------------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> SlurmCluster:
        # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the daemons are stopped either way.
        self._old_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            signal.signal(signal.SIGTERM, self._old_term)

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        out = open(self.root / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.root,
                             start_new_session=True)
        out.close()
        self.procs.append((name, p))
        return p

    def start(self) -> None:
        r = self.root
        if SYSTEM_CONF.exists() and not self._ours(SYSTEM_CONF):
            raise ForeignSlurmConfig(f"{SYSTEM_CONF} exists: this machine has its own Slurm, which the test leaves alone")
        for d in ("state", "spool", "db", "logs"):
            (r / d).mkdir(parents=True, exist_ok=True)
        self.ports = {k: free_port() for k in ("mysql", "dbd", "ctld", "slurmd")}
        # munge: a fresh key and a private socket
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self.munge_socket = r / "munge.sock"
        self._spawn("munged", [which("munged"), "-F", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--log-file={r / 'logs' / 'munged.log'}",
                               f"--pid-file={r / 'munged.pid'}", f"--seed-file={r / 'munged.seed'}"])
        wait_for("munged", self.munge_socket.exists, procs=self.procs)
        # MariaDB on a private port (loopback only; no grant tables: a throwaway test database)
        subprocess.run([which("mariadb-install-db"), "--no-defaults", f"--datadir={r / 'db'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, env=self.env)
        self._spawn("mariadbd", [which("mariadbd"), "--no-defaults", f"--datadir={r / 'db'}", "--user=root",
                                 f"--port={self.ports['mysql']}", "--bind-address=127.0.0.1",
                                 f"--socket={r / 'mysql.sock'}", f"--pid-file={r / 'mysql.pid'}",
                                 "--skip-grant-tables", f"--log-error={r / 'logs' / 'mariadb.log'}"])
        wait_for("mariadbd", lambda: port_open(self.ports["mysql"]), procs=self.procs)
        self._write_configs()
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.unlink(missing_ok=True)  # a dangling link of an earlier test run (checked above)
        SYSTEM_CONF.symlink_to(self.conf)
        self._linked = True
        self._spawn("slurmdbd", [which("slurmdbd"), "-D"])
        wait_for("slurmdbd", lambda: port_open(self.ports["dbd"]), timeout=120, procs=self.procs)
        # The cluster, an account and this user in the accounting database (what sacctmgr shows on a site).
        user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        for cmd in (["add", "cluster", self.cluster], ["add", "account", "crosstrace", "Cluster=" + self.cluster],
                    ["add", "user", user, "Account=crosstrace", "Cluster=" + self.cluster]):
            self.run_client([which("sacctmgr"), "-i", *cmd], check=False)
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        wait_for("slurmctld", lambda: port_open(self.ports["ctld"]), timeout=120, procs=self.procs)
        self._spawn("slurmd", [which("slurmd"), "-D", "-f", str(self.conf), "-N", self.host])
        wait_for("node idle", lambda: "idle" in self.run_client(["sinfo", "-h", "-o", "%T"], check=False).stdout,
                 timeout=120, procs=self.procs)

    def _write_configs(self) -> None:
        r, p = self.root, self.ports
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        dbd = r / "slurmdbd.conf"  # next to slurm.conf: slurmdbd finds it through SLURM_CONF's folder
        dbd.write_text(auth + f"""DbdHost=localhost
DbdPort={p['dbd']}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={p['mysql']}
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={r / 'slurmdbd.pid'}
LogFile={r / 'logs' / 'slurmdbd.log'}
""")
        dbd.chmod(0o600)
        self.conf.write_text(MARK + "\n" + auth + f"""ClusterName={self.cluster}
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={p['ctld']}
SlurmdPort={p['slurmd']}
SlurmUser=root
SlurmdUser=root
CredType=cred/munge
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'logs' / 'slurmctld.log'}
SlurmdLogFile={r / 'logs' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={p['dbd']}
AccountingStoragePass={self.munge_socket}
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
MinJobAge=300
ReturnToService=2
MpiDefault=none
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def stop(self) -> None:
        """Cancel every job, then stop the daemons in reverse order (TERM, then KILL after 20 s)."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self.procs):
            self.run_client(["scancel", "--user", str(os.geteuid()), "--full"], check=False)
            self.run_client(["scancel", "--state=PENDING", "--user", str(os.geteuid())], check=False)
            time.sleep(2)
        for _name, p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs.clear()
        if getattr(self, "_linked", False) and SYSTEM_CONF.is_symlink():
            SYSTEM_CONF.unlink()
            self._linked = False

    @staticmethod
    def _ours(path: Path) -> bool:
        """Our symlink (possibly dangling, from a test run that was killed hard)."""
        if not path.is_symlink():
            return False
        target = path.resolve()
        return not target.exists() or target.read_text(errors="replace").startswith(MARK)

    # --------------------------------------------------------------------------------------- clients
    def run_client(self, cmd: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def jobs(self) -> list[dict]:
        """Jobs slurmctld knows (running, pending and recently finished): id, name, state, comment."""
        out = self.run_client(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%k"]).stdout
        return [dict(zip(("id", "name", "state", "comment"), line.split("|", 3), strict=True))
                for line in out.splitlines() if line.strip()]

    def accounting(self) -> list[dict]:
        """What sacct (slurmdbd) reports for every job of the test: id, state, comment."""
        out = self.run_client(["sacct", "-X", "-n", "-P", "-S", "now-1days", "-o", "JobIDRaw,State,Comment"]).stdout
        return [dict(zip(("id", "state", "comment"), line.split("|", 2), strict=True))
                for line in out.splitlines() if line.strip()]


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    if cmd == "install":
        install()
    elif cmd == "check":
        missing = missing_binaries()
        print("missing: " + " ".join(missing) if missing else "all Slurm test binaries present")
        sys.exit(1 if missing else 0)
    else:
        raise SystemExit(f"unknown command {cmd!r} (install | check)")
