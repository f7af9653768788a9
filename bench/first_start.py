"""First start, measured as a newcomer sees it: start the app on an empty cache (packages
installed) and record, in headless Chromium, when each page first shows real content:

- Home with counts (a non-zero "value-vector tokens" metric);
- a value vector for "Paris" (Feature browser → Value vectors: "value vector(s) match");
- a neuron histogram for a default concept (Neurons: the gate pre-activation histogram);
- an SAE feature for "river" (Feature browser → SAE features: a result table).

Also prints when the first start announced each of its steps, and the server log's lines that
are neither Streamlit's start lines nor our own (watcher noise would show here).

    python bench/first_start.py [--model embedded] [--minutes 15] [--fresh-model]

By default the model checkpoint is reused from cache/models (its one-time build, ~60 s, is
measured by --fresh-model). Writes bench/results/first-start-<model>-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHECKS = ("home_counts", "value_vector_paris", "neuron_histogram", "sae_feature_river")
args_words = {"vv": "Paris", "sae": "river"}  # --vv-word / --sae-word (the tiny model knows neither)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("streamlit did not start")


def settle(page, timeout_ms: int = 60_000) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_timeout(500)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout_ms)


def open_page(page, url: str, label: str | None) -> None:  # type: ignore[no-untyped-def]
    page.goto(url)
    page.get_by_text("Concept-erasure workbench").first.wait_for(timeout=120_000)
    settle(page, 300_000)
    if label:
        page.locator('[data-testid="stSidebarNav"]').get_by_text(label, exact=True).click()
        page.get_by_role("heading", name=label).first.wait_for(timeout=120_000)
        settle(page)


def check(page, url: str, name: str) -> bool:  # type: ignore[no-untyped-def]
    """True when the page shows the real content `name` stands for."""
    if name == "home_counts":
        open_page(page, url, None)
        value = page.locator('[data-testid="stMetricValue"]').first.inner_text(timeout=10_000)
        return value.strip() not in ("", "0")
    open_page(page, url, "Neurons" if name == "neuron_histogram" else "Feature browser")
    if name == "neuron_histogram":
        return page.get_by_text("gate pre-activation").count() > 0
    if name == "value_vector_paris":
        page.get_by_role("tab", name="Value vectors (W_out rows)").click()
        box = page.get_by_role("textbox", name="Search tokens")
        box.fill(args_words["vv"], timeout=10_000)
        box.press("Enter")
        settle(page)
        return page.get_by_text("value vector(s) match").count() > 0
    try:  # the SAE tab says so while no SAE is catalogued; don't wait on a search box that is not there
        page.get_by_text("No SAE is catalogued").wait_for(timeout=3_000)
        return False
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError: the notice is gone, so search
        pass
    box = page.get_by_role("textbox", name="Token or label")
    box.fill(args_words["sae"], timeout=10_000)
    box.press("Enter")
    settle(page)
    return page.get_by_text("No feature fires on").count() == 0 and page.locator('[data-testid="stDataFrame"]').count() > 0


def first_start_messages(jobs_dir: Path) -> list[str]:
    out: list[str] = []
    for path in sorted(jobs_dir.glob("*first-start*.json")):
        try:
            out += [m for m in json.loads(path.read_text()).get("messages", []) if m.startswith("First start")]
        except (OSError, json.JSONDecodeError):
            continue
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--poll-s", type=float, default=5.0)
    ap.add_argument("--fresh-model", action="store_true", help="build the model checkpoint too")
    ap.add_argument("--vv-word", default="Paris")
    ap.add_argument("--sae-word", default="river")
    args = ap.parse_args()
    args_words.update(vv=args.vv_word, sae=args.sae_word)
    from playwright.sync_api import sync_playwright

    cache = Path(tempfile.mkdtemp(prefix="first-start-"))
    if not args.fresh_model:
        models = REPO / "cache" / "models"
        models.mkdir(parents=True, exist_ok=True)
        (cache / "models").symlink_to(models.resolve(), target_is_directory=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WORKBENCH_MODEL": args.model, "WORKBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WORKBENCH_AUTOPREPARE": "1"}
    log_path = cache / "server.log"
    t0 = time.time()
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    seen: dict[str, float] = {}
    steps: dict[str, float] = {}
    try:
        wait_healthy(url)
        print(f"server healthy after {time.time() - t0:.1f} s; cache {cache}", flush=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            deadline = t0 + args.minutes * 60
            while time.time() < deadline and len(seen) < len(CHECKS):
                for name in CHECKS:
                    if name in seen:
                        continue
                    try:
                        ok = check(page, url, name)
                    except Exception as err:  # noqa: BLE001 - a page still loading is "not yet"
                        ok = False
                        why = str(err).splitlines()[0][:120]
                        print(f"  {time.time() - t0:6.0f} s  {name}: not yet ({type(err).__name__}: {why})", flush=True)
                    if ok:
                        seen[name] = time.time() - t0
                        print(f"  {seen[name]:6.0f} s  {name}: shows real content", flush=True)
                for message in first_start_messages(cache / "jobs"):
                    if message not in steps:
                        steps[message] = time.time() - t0
                        print(f"  {steps[message]:6.0f} s  {message}", flush=True)
                time.sleep(args.poll_s)
            browser.close()
    finally:
        served = log_path.read_text()  # before shutdown, whose lines are not serving
        server.terminate()
        server.wait(20)
    ours = ("You can now view", "URL:", "Local URL", "Network URL", "External URL")  # Streamlit's start lines
    ours += ("Uvicorn server started", "Did not auto detect external IP", "Please go to https://docs.streamlit.io")
    noise = [line for line in served.splitlines() if line.strip() and not any(mark in line for mark in ours)]
    print("\nfirst real content, seconds after `streamlit run` (2 cores):")
    for name in CHECKS:
        print(f"  {name:22s} {seen[name]:7.0f}" if name in seen else f"  {name:22s} not within {args.minutes:g} min")
    print(f"server log: {len(noise)} line(s) besides Streamlit's start lines" + (":" if noise else ""))
    for line in noise[:20]:
        print("   ", line[:200])
    out = REPO / "bench" / "results" / f"first-start-{args.model}-{time.strftime('%Y-%m-%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "fresh_model": args.fresh_model, "pages_s": seen,
                               "steps_s": steps, "log_noise": noise[:50], "minutes": args.minutes}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if len(seen) == len(CHECKS) else 1


if __name__ == "__main__":
    sys.exit(main())
