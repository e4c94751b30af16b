"""Real services for the cluster tests, started on localhost from Debian's packages:
a PostgreSQL server and a one-node SLURM (munge, slurmctld, slurmd). ``make cluster-services``
(run by ``.ci/run``) installs the packages; where a service cannot start, its tests are
skipped with one line saying why."""
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_user(user: str, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` as ``user`` (PostgreSQL refuses to run as root)."""
    if os.geteuid() == 0 and user != "root":
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


@contextlib.contextmanager
def postgres_server():
    """A throw-away PostgreSQL server on 127.0.0.1; yields its SQLAlchemy URL."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does)")
    bindir = Path(bins[-1]).parent
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam(user)
    except KeyError:
        pytest.skip(f"PostgreSQL: no {user!r} user to run the server as")
    root = Path(tempfile.mkdtemp(prefix="difformer-pg-", dir="/tmp"))
    root.chmod(0o755)
    shutil.chown(root, user)
    data, port = root / "data", free_port()
    init = as_user(user, [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
    if init.returncode != 0:
        pytest.skip(f"PostgreSQL: initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100"
    start = as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts,
                           "-l", str(root / "server.log"), "-w", "-t", "60", "start"])
    if start.returncode != 0:
        pytest.skip(f"PostgreSQL: the server did not start: {start.stderr.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def wait_for(predicate, seconds: float, what: str, step: float = 0.2):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"waited {seconds:.0f}s for {what}")


SLURM_CONF = """\
ClusterName=difformertest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
KillWait=5
OverTimeLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def slurm_cluster():
    """A one-node SLURM on localhost (munged, slurmctld, slurmd; no accounting database);
    yields the environment its commands need (SLURM_CONF). ``cred_expire=10``: a requeued job
    may start again after 11 s instead of the default 121 s."""
    if os.geteuid() != 0:
        pytest.skip("SLURM: starting slurmd needs root (CI runs as root)")
    daemons = {name: shutil.which(name) or f"/usr/sbin/{name}"
               for name in ("munged", "slurmctld", "slurmd")}
    missing = [n for n, p in daemons.items() if not Path(p).exists()]
    if missing or not shutil.which("sbatch"):
        pytest.skip(f"SLURM is not installed ({missing or 'sbatch'}; apt-get install "
                    "slurm-wlm munge; .ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="difformer-slurm-", dir="/tmp"))
    root.chmod(0o755)
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    munge = root / "munge"
    munge.mkdir(mode=0o700)
    shutil.chown(munge, "munge", "munge")
    conf = root / "slurm.conf"
    host = socket.gethostname().split(".")[0]
    conf.write_text(SLURM_CONF.format(host=host, root=root, ctld_port=free_port(),
                                      slurmd_port=free_port(), cpus=os.cpu_count() or 1))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started = []
    try:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create"], check=False, capture_output=True)
        steps = [
            as_user("munge", [daemons["munged"], f"--socket={munge}/munge.socket",
                              f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                              f"--seed-file={munge}/seed", "--force"]),
            subprocess.run([daemons["slurmctld"], "-f", str(conf)], capture_output=True,
                           text=True, env=env, timeout=60),
            subprocess.run([daemons["slurmd"], "-f", str(conf)], capture_output=True, text=True,
                           env=env, timeout=60),
        ]
        started = [munge / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
        for name, step in zip(daemons, steps):
            if step.returncode != 0:
                pytest.skip(f"SLURM: {name} did not start: {step.stderr.strip()[-300:]}")

        def idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                                 env=env).stdout
            return "idle" in out

        try:
            wait_for(idle, 60, "the SLURM node to be idle", step=1)
        except AssertionError:
            log = (root / "slurmd.log").read_text()[-300:] if (root / "slurmd.log").exists() \
                else ""
            pytest.skip(f"SLURM: the node never became idle: {log}")
        yield env
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True)
        for pid_file in reversed(started):
            try:
                os.kill(int(pid_file.read_text()), 15)
            except (OSError, ValueError):
                pass
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)
