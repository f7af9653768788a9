"""A user's edit draft: operations in order, moved, removed, cleared (the Edit page's list)."""

from __future__ import annotations

from workbench.ui.draft import EditDraft, ablate, describe, prune


def test_draft_orders_operations() -> None:
    d = EditDraft()
    d.add(ablate(2, [5, 3, 3]))
    d.add(prune(1, [7]))
    assert d.operations[0].neurons == [3, 5]
    d.move(1, -1)
    assert [op.kind for op in d.operations] == ["prune_neurons", "ablate_value_vectors"]
    d.move(0, -1)  # no-op at the top
    d.remove(0)
    assert len(d.operations) == 1 and "layer 2" in describe(d.operations[0])
    v = d.version
    d.clear()
    assert d.operations == [] and d.version == v + 1
