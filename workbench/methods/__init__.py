"""Erasure methods: from a concept to an EditSpec.

A method builds the concept's fact set (`facts`), finds where it is stored and produces
operations for `workbench.ops` kernels: `erase` is the entry point and registry of methods;
`optimise` (localized value-vector optimisation), `key_rewrite` (name-key rewrite),
`pisces_search` (SAE feature search for PISCES) are the methods it dispatches to. They share
`retain` (the retain text, `RetainConfig`), `frames` (the name frames, `FramesConfig`),
`counterfactual` (the counterfactual-name target), `rows` (row selection by activation contrast),
`losses` and `readout` (the model read at chosen positions).
"""
