"""``python -m examples.connect_intentions``."""

from examples.connect_intentions.run import main

main()
