"""What the test suites share: one programmable fake upstream resolver (`upstream`), child
processes with bounded waits (`processes`) and the servers started that way (`servers`).

Nothing here imports `resolver` or `bench`: the benchmarks import these modules (the direction
is one way), and a checkout where blokir cannot be imported can still start NSD with them."""
