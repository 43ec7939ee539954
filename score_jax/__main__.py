"""`python -m score_jax` is the `score-jax` command."""

from score_jax.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
