"""Entry point for ``python -m aecompress``."""

from aecompress.cli import main

main()
