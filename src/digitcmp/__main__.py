"""`python -m digitcmp` is the `digitcmp` command."""

from .cli import main_exit

main_exit()
