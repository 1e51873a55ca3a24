"""``siambench run``: a pipeline file -> ordered steps -> subprocesses, resumable, with checks before launch."""
