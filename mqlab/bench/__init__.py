"""``mqlab bench`` and the live comparison table: measuring the brokers, not the harness.

- :mod:`mqlab.bench.harness`: one workload, the same on every system, pipelined through the
  adapters (bounded in-flight sends, batching where the client batches, a consumer measuring
  end-to-end latency from a timestamp in each payload).
- :mod:`mqlab.bench.native`: the brokers' own perf tools on the same broker, for the ratio.
- :mod:`mqlab.bench.report`: the settings, numbers and a text plot.
- :mod:`mqlab.bench.table`: the cheat sheet's comparison table and the verdict of each cell
  (pure: the runs feed it).
- :mod:`mqlab.bench.experiments`: the runs that feed it (scenarios, the harness, the lab).
"""
