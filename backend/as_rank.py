"""`python -m backend.as_rank ARGS...`: one rank of a `--gpus N` run (`parallel.launch` starts them).

The entry point sits on the top floor beside `__main__` so that `parallel.ranks` is handed the
command-line function instead of importing `cli` back up.
"""

import sys

from .cli import main as run_command
from .parallel.ranks import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], run_command))
