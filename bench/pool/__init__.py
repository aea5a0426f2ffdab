"""`make bench-pool`: routing strategies on a simulated pool of vLLM-like servers."""
