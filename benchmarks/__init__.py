"""siambench suite level: the ``siambench`` command, datasets, pipelines, tables and reports."""
