import sys

from lenslib.cli import main

sys.exit(main())
