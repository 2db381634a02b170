"""``python -m radflow`` is the ``radflow`` command."""

from radflow.cli import main

main()
