"""`python -m bench.translate`: the pure functions' cost (pure.py)."""

from bench.translate.pure import main

main()
