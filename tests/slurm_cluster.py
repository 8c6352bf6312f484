"""A real single-node SLURM cluster for the cluster tests: munge, slurmctld and slurmd on localhost.

``.ci/slurm-setup.sh start`` installs Debian's packages when missing, writes the config and starts the
daemons as root without systemd. The fixture stops them again
only if it started them. Where SLURM cannot start, the tests **fail** with the setup log: they are part
of CI, not optional. ``LENS_SLURM_TESTS=0`` opts out explicitly on a machine that cannot run them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP = REPO_ROOT / ".ci" / "slurm-setup.sh"


@dataclass
class SlurmCluster:
    started_here: bool
    setup_seconds: float

    @staticmethod
    def up() -> bool:
        return (
            shutil.which("scontrol") is not None
            and subprocess.run([str(SETUP), "status"], capture_output=True).returncode == 0
        )


def start_cluster() -> SlurmCluster:
    if os.environ.get("LENS_SLURM_TESTS") == "0":
        pytest.skip("LENS_SLURM_TESTS=0: the real-SLURM tests were switched off explicitly")
    t0 = time.time()
    if os.geteuid() == 0 and SlurmCluster.up():
        return SlurmCluster(started_here=False, setup_seconds=0.0)
    if os.geteuid() != 0:
        pytest.fail(
            "the SLURM tests need root to install and start munge/slurmctld/slurmd (.ci/slurm-setup.sh); "
            "run them as root or set LENS_SLURM_TESTS=0 to opt out",
            pytrace=False,
        )
    out = subprocess.run([str(SETUP), "start"], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        pytest.fail(
            f"SLURM could not start ({SETUP} start, exit {out.returncode}):\n{out.stdout}\n{out.stderr}",
            pytrace=False,
        )
    return SlurmCluster(started_here=True, setup_seconds=time.time() - t0)


def stop_cluster(cluster: SlurmCluster) -> None:
    if cluster.started_here:
        subprocess.run([str(SETUP), "stop"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def slurm_cluster():
    cluster = start_cluster()
    print(
        f"\nSLURM cluster: {'started' if cluster.started_here else 'already up'} "
        f"in {cluster.setup_seconds:.1f} s"
    )
    yield cluster
    stop_cluster(cluster)
