"""The measuring harness: workloads → load generator → metrics → reports and profile store.

Modules: workloads/text (what to send), loadgen/sweep (sending it), metrics (what
it measured), report (summary.md, plots), store (SQLite profiles), runs (one run
end to end) and cli (`rayfleet bench`).
"""
