"""`python -m stadapt ...` (and `torchrun -m stadapt ...`): the same as the `stadapt` command."""

from stadapt.cli import main

main()
