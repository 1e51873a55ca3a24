"""The suite's core, one home per shared concept: config (``_BASE_`` walk, flatten/diff), errors
(``UserError``: one line, exit 2), I/O (atomic writes, the weights-only reader, sha256), run and
checkpoint directories, logging, distributed helpers. It imports no other siambench package."""
