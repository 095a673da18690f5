"""Plugin mode: blokir's index and block answers inside another resolver.

- engine.py: the decision (index lookup, policy, block answer as text records), the index
  reload and the metrics textfile; no resolver API, so it is tested on its own
- unbound.py: the script Unbound's Python module (pythonmod) runs; glue to Unbound's API only
- unbound_setup.py: `blokir plugin unbound`: the unbound.conf lines, and `--check`
"""
