"""Preemption: save at the next step boundary on SIGTERM/SIGUSR1, then exit with a requeue code.

Clusters stop jobs with signals: SLURM sends SIGTERM at preemption or time-out (and SIGUSR1 ahead of
time with ``--signal=USR1@90``); a notebook kernel gets SIGINT. The handler here only sets a flag. At each
step boundary the ranks agree (an all-reduce of the flag, MAX), so *every* rank saves the same step even
if only one was signalled, and then all exit with :data:`REQUEUE_EXIT_CODE` so a job script can requeue::

    lens train --config lens-stage1 --nproc-per-node 8 ...; [ $? -eq 75 ] && scontrol requeue $SLURM_JOB_ID

Two traps, measured with torch 2.13 on Linux:

* ``torchrun`` forwards SIGTERM/SIGINT to its workers, but SIGUSR1 only when started with
  ``--signals-to-handle ...,SIGUSR1`` (``lens train --nproc-per-node`` passes it); and torchrun's own exit
  code is 1 whatever the workers return, so the trainer also leaves a ``PREEMPTED`` file in the run folder
  that the launcher turns into the requeue code.
* torchrun starts workers in their own sessions; if the launcher is SIGKILLed they are orphaned and keep
  training. :func:`die_with_parent` asks the kernel to send SIGTERM to a worker when its parent dies
  (``PR_SET_PDEATHSIG``), which then saves and exits like any preemption.

Used by the trainer; chapter 4 shows a stop and resume.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["REQUEUE_EXIT_CODE", "PREEMPT_SIGNALS", "PreemptionHandler", "die_with_parent"]

#: Exit status after a preemption save (BSD ``EX_TEMPFAIL``: "try again later").
REQUEUE_EXIT_CODE = 75
#: Signals that request save-and-exit.
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux only).

    Returns True when installed. If the parent is already gone (re-parented to init), sends ``sig`` now.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except OSError:
        return False
    if os.getppid() == 1:  # the launcher died before we got here
        os.kill(os.getpid(), sig)
    return True


class PreemptionHandler:
    """Install flag-setting handlers for :data:`PREEMPT_SIGNALS`; restore the old ones on :meth:`close`.

    ``requested`` is this process's flag; :meth:`should_stop` makes all ranks agree. A second SIGINT
    restores the default behaviour (KeyboardInterrupt), so an impatient Ctrl-C still stops at once.
    ``on_request(signal_name)``, if given, also runs on every request: ``lens run-notebook`` touches the
    run's preempt flag there (:mod:`lenslib.cluster.notebook`).
    """

    def __init__(self, signals=PREEMPT_SIGNALS, on_request=None):
        self.requested = False
        self.signal_name: str | None = None
        self._on_request = on_request
        self._old = {}
        for sig in signals:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some notebook runners): no handlers
                pass

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self._on_request is not None:
            self._on_request(self.signal_name)

    def should_stop(self, group=None) -> bool:
        """True on every rank if any rank was signalled (one tiny all-reduce when distributed)."""
        # lazy: `lens --help` imports this module (through lenslib.train.cli); torch costs 1 s or more
        import torch  # noqa: PLC0415
        import torch.distributed as dist  # noqa: PLC0415

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        backend = dist.get_backend(group)
        device = (
            torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        )
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        stop = bool(flag.item() > 0)
        if stop and self.signal_name is None:
            self.signal_name = "peer"
        return stop

    def close(self) -> None:
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        self._old = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
