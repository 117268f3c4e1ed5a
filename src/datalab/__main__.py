"""`python -m datalab` runs the command line."""

from datalab.cli import main

main()
