"""siambench suite level: the ``siambench`` command and doctor; ``pipeline/`` (``siambench run``),
``report/`` (tables, verdict, plots, reports), ``speed/`` (speed benchmarks)."""
