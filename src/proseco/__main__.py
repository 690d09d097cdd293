"""``python -m proseco COMMAND ...`` (and ``accelerate launch -m proseco train ...``)."""

from __future__ import annotations

import sys

from proseco.commands import main

if __name__ == "__main__":
    sys.exit(main())
