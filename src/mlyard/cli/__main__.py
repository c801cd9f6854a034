"""``python -m mlyard.cli`` runs the ``mlyard`` command."""

from mlyard.cli.main import main

main()
