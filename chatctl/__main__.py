"""`python -m chatctl` runs the command-line toolkit."""

from chatctl.cli import main

main()
