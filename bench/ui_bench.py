"""UI latency on the tiny model: AppTest run time of each page (warm, shared resources loaded)
and how long starting a background build blocks the request. Prints numbers side by side.

    WORKBENCH_MODEL=tiny WORKBENCH_CACHE=DIR PYTHONPATH=. python bench/ui_bench.py   # DIR prepared with `prepare`
    WORKBENCH_MODEL=embedded PYTHONPATH=. python bench/ui_bench.py --feature-page river   # warm feature page

Measured 2026-11-24 (embedded model, catalogued layer-6 SAE, warm cache, 2 cores with a CI run in
parallel): from page load to a rendered SAE feature page (search 'river', feature 2374 with its
charts, snippets and tau rows): median 0.23 s, max 1.02 s over 5 runs (AppTest, no browser).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from streamlit.testing.v1 import AppTest

from workbench.config import REPO_ROOT

PAGES = ["app.py", "pages/5_Erase_a_concept.py", "pages/1_Feature_browser.py", "pages/2_Concept_vectors.py", "pages/3_Neurons.py",
         "pages/4_Edit_and_preview.py"]


def run_page(page: str) -> float:
    t0 = time.perf_counter()
    at = AppTest.from_file(str(REPO_ROOT / page), default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    return time.perf_counter() - t0


def feature_page(query: str, runs: int = 5) -> None:
    """Page load -> rendered feature page (search, pick the best match, charts and snippets)."""
    run_page("pages/1_Feature_browser.py")  # warm: model, store, SAE loaded once
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        at = AppTest.from_file(str(REPO_ROOT / "pages/1_Feature_browser.py"), default_timeout=300).run()
        at.text_input(key="fb_query").input(query).run()
        assert not at.exception and any(m.value.startswith("### Feature") for m in at.markdown), "no feature page"
        times.append(time.perf_counter() - t0)
    print(f"page load -> rendered feature page for {query!r}: median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s over {runs} runs (warm cache)")


def main() -> None:
    if "--feature-page" in sys.argv:
        feature_page(sys.argv[sys.argv.index("--feature-page") + 1])
        return
    os.environ.setdefault("WORKBENCH_MODEL", "tiny")
    cold = run_page("app.py")  # loads bundle + store once
    print(f"{'page':34s} {'median s':>9s} {'max s':>7s}")
    for page in PAGES:
        times = [run_page(page) for _ in range(5)]
        print(f"{page:34s} {statistics.median(times):9.3f} {max(times):7.3f}")
    print(f"first Home run (loads the model and store): {cold:.2f} s")

    from workbench.jobs import JobManager
    from workbench.ui import resources

    manager = JobManager(resources.settings().jobs_dir)
    t0 = time.perf_counter()
    job = manager.start("bench", "bench", lambda p: (time.sleep(1.0), "ok")[1])
    start_ms = (time.perf_counter() - t0) * 1000
    manager.wait(job)
    print(f"starting a background job blocks the request for {start_ms:.1f} ms (the job itself ran 1 s)")


if __name__ == "__main__":
    main()
