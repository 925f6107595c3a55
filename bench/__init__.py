"""`make bench`: the load generator, the reference servers and the ADK peer (see bench/run.py)."""
