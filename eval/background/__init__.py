"""Fixed-object background generation, measured: fidelity inside the mask, diversity outside."""
