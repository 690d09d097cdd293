"""``python -m proseco.cli COMMAND ...``: a thin entry point kept for ``python -m`` launches.

``accelerate launch -m proseco.cli train ...`` and ``torchrun ... -m proseco.cli train ...`` need a
module to run; the dispatcher itself lives in :mod:`proseco.commands`.
"""

from __future__ import annotations

import sys

from proseco.commands import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
