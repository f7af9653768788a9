"""Erasure methods: from a concept to an EditSpec.

A method builds the concept's fact set (`facts`), finds where it is stored and produces
operations for `workbench.ops` kernels: `erase` is the entry point and registry of methods;
`optimise` (localized value-vector optimisation), `key_rewrite` (name-key rewrite),
`pisces_search` (SAE feature search for PISCES) are the methods it dispatches to.
"""
