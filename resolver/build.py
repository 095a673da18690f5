"""`python -m resolver.build`: compile an index in a process of its own, for live reloads.

The serving supervisor never compiles in its own process: a build of a 10M-name list peaks near
0.5 GB (README "The index"), and a process returns little of that to the system afterwards. A
fresh interpreter also avoids forking a supervisor that runs threads (metrics, control socket).

Reads one JSON object on stdin, `{"specs": [spec_json(...), ...], "output": "path"}`, writes the
index to `output` (atomically: `save_index` writes a temporary file and renames it) and exits 0;
on failure prints one line to stderr and exits 1. The caller checks the result and applies it.
"""

from __future__ import annotations

import json
import sys

from resolver.compile import compile_lists, write_index
from resolver.index import IndexError_
from resolver.provenance import CompileError, spec_from_json


def main() -> int:
    try:
        request = json.load(sys.stdin)
        specs = [spec_from_json(item) for item in request["specs"]]
        write_index(compile_lists(specs), request["output"])
    except (CompileError, IndexError_, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
