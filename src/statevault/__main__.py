"""`python -m statevault`: the same as the `statevault` command."""

from statevault.cli import main

if __name__ == "__main__":
    main()
