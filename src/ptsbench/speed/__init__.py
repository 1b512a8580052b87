"""How fast a pruned model runs: sparse layer backends, measured latency (dense vs sparse kernels) and the
theoretical FLOP reduction of its masks."""
