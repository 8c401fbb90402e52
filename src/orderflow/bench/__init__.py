"""``orderflow bench``: load generator, ceilings and the benchmark report (issue 7)."""
