"""Shared utilities for the whole suite: config files, atomic I/O, logging."""
