"""`python -m controller` is the `vtax` command (used where the console script is not on PATH)."""

from controller.cli import main

main()
