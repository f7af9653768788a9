"""Operation kernels: pure tensor functions, one module per EditSpec operation.

Each takes base tensors (a layer's `w_out: [d_mlp, d_model]`, an SAE's decoder, neuron
statistics) and returns the new rows or the hook it needs; none touches a model or the disk.
`workbench.edits.compile` turns their results into adapter deltas. The erasure methods that
choose *which* rows, features or directions to hand them live in `workbench.methods`.

- ablate: zero, scale or noise value vectors (W_out rows);
- prune: zero whole neurons (NeuroStrike);
- project: project a residual direction out of W_out rows;
- pisces: the PISCES closed-form rewrite of rows through SAE features;
- neuron_adjust: Neuron Adjust's run-time remap of gate pre-activations (not a weight edit).
"""
