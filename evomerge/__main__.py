"""`python -m evomerge`: the same as the `evomerge` command."""

from evomerge.cli import main

main()
