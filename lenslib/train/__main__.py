"""``python -m lenslib.train`` / ``torchrun --nproc_per_node N -m lenslib.train --config NAME key=value ...``.

Each torchrun worker runs this; exit status 0 when done, :data:`~lenslib.train.signals.REQUEUE_EXIT_CODE`
after a preemption save, 2 for a bad config. Used by ``lens train --nproc-per-node``.
"""

from __future__ import annotations

import sys

from .cli import main_train

if __name__ == "__main__":
    sys.exit(main_train())
