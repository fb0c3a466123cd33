"""`python -m kiln.cli` is `jobs`."""

from kiln.cli import main

main()
