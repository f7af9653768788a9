"""The bridge's per-call flags are per thread: two threads running the one shared model (a job
beside the first start's activation collection) must not consume or reset each other's flags."""

from __future__ import annotations

import threading

from workbench.models.bridge_threads import ThreadLocalAttr, make_call_state_thread_local


def test_a_flag_set_in_one_thread_is_not_seen_in_another(tiny_bundle) -> None:  # type: ignore[no-untyped-def]
    make_call_state_thread_local()
    mlp = tiny_bundle.bridge.blocks[0].mlp
    proj = next(m for m in mlp.modules() if type(m).__name__ == "LinearBridge")
    object.__setattr__(proj, "_suppress_next_hook_in", True)  # as MLPBridge.forward sets it
    seen: list[bool] = []
    worker = threading.Thread(target=lambda: seen.append(proj._suppress_next_hook_in))
    worker.start()
    worker.join()
    try:
        assert seen == [False]  # the other thread has its own, default, value
        assert proj._suppress_next_hook_in is True  # this thread still has its own
    finally:
        object.__setattr__(proj, "_suppress_next_hook_in", False)


def test_the_descriptor_keeps_one_value_per_instance_and_thread() -> None:
    class Holder:
        flag = ThreadLocalAttr(False)

    a, b = Holder(), Holder()
    a.flag = True
    assert (a.flag, b.flag) == (True, False)
    del a.flag
    assert a.flag is False
