"""UI latency on the tiny model: AppTest run time of each page (warm, shared resources loaded)
and how long starting a background build blocks the request. Prints numbers side by side.

    WORKBENCH_MODEL=tiny WORKBENCH_CACHE=DIR PYTHONPATH=. python bench/ui_bench.py   # DIR prepared with `prepare`
"""

from __future__ import annotations

import os
import statistics
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


def main() -> None:
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
