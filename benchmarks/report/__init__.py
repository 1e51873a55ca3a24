"""Results of a runs directory -> the paper's tables, the verdict on its claims, plots and the report."""
