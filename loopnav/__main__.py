"""`python -m loopnav ...` (and `torchrun -m loopnav ...`) run the command line."""

from loopnav.cli import main

main()
