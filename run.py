#!/usr/bin/env python3
"""``python run.py ...`` is the same as the ``streampose`` command."""

import sys

from streampose.cli import main

if __name__ == "__main__":
    sys.exit(main())
