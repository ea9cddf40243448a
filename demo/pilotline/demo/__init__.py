"""A simulated pilot line for ``pilotline demo``, benchmarks and tests."""
