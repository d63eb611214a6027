"""``python -m noisytail`` (and ``torchrun -m noisytail``) run the CLI."""

from .cli import main

main()
