"""``python -m lviv_c COMMAND ...``: see lviv_c.cli."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
