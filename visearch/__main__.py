"""``python -m visearch`` runs the command line."""

from visearch.cli import main

main()
