"""Does a long-running shared server hold its memory flat? The server's own parts, in one
process, as the app wires them (ui/resources.py): one model loaded with `tune_process`, one
PreviewBatcher, one JobManager whose sweep expires exports.

N users (threads), each with their own edit (ablated value vectors at their own layer and
neurons), preview base vs edited side by side through the shared batcher, over and over; while
they do, the users start erases (owned jobs in the one queue, scored, as the Erase page does)
and read their results, as a page would. RSS is sampled after the first `--warm` previews (the
baseline) and then every `--every` previews.

    python bench/server_memory.py                                  # tiny model: 8 users, 1000 previews, 20 erases
    python bench/server_memory.py --model embedded --method ablate  # the real model (minutes)

The last line reads `server memory: N users, P previews, E erases: RSS A MB after W previews,
B MB at the end, growth G%` (goal: |G| <= 5). Figures go to bench/results/server-memory-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.config import ExportLimits, JobLimits, Settings  # noqa: E402
from workbench.corpus import load_wiki  # noqa: E402
from workbench.edits import EditSpec, compile_spec  # noqa: E402
from workbench.exports.disk import expire_exports  # noqa: E402
from workbench.generate import PreviewBatcher, SamplingParams, stream_pair  # noqa: E402
from workbench.jobs import JobManager, erase_job  # noqa: E402
from workbench.methods.erase import EraseOptions  # noqa: E402
from workbench.models import ModelBundle, load_bundle, parse_source  # noqa: E402

PROMPTS = ("The capital of France is", "Albert Einstein was born in", "The Beatles were a band from",
           "Water boils at a temperature of", "The largest planet in the solar system is")
CONCEPTS = ("Paris", "Albert Einstein", "The Beatles", "Japan", "London")


def rss_mb() -> float:
    """This process's resident set (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def user_spec(bundle: ModelBundle, user: int) -> EditSpec:
    """User `user`'s own edit: 16 value vectors of their own layer ablated."""
    layer = user % bundle.n_layers
    neurons = [(user * 97 + 13 * i) % bundle.d_mlp for i in range(16)]
    return EditSpec.from_dict({"name": f"user-{user}", "model": {"id": bundle.model_id,
                                                                  "weights_sha256": bundle.weights_sha256},
                               "operations": [{"kind": "ablate_value_vectors", "layer": layer,
                                               "neurons": sorted(set(neurons))}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--previews", type=int, default=1000, help="side-by-side previews in all")
    parser.add_argument("--erases", type=int, default=20)
    parser.add_argument("--warm", type=int, default=100, help="previews before the baseline RSS")
    parser.add_argument("--every", type=int, default=100, help="previews between RSS samples")
    parser.add_argument("--tokens", type=int, default=8, help="new tokens per preview")
    parser.add_argument("--method", default="ablate", help="the erase method the users run")
    args = parser.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="server-memory-"))
    settings = Settings.from_env(model_source=args.model)
    bundle = load_bundle(parse_source(args.model), settings, tune_process=True)  # as the app loads it
    corpus = load_wiki("en")
    batcher = PreviewBatcher(bundle)
    exports = ExportLimits()
    manager = JobManager(cache / "jobs", JobLimits(result_ttl_s=30.0), device=str(bundle.device),
                         on_sweep=lambda now: expire_exports(cache / "exports", exports, now))
    adapters = [compile_spec(user_spec(bundle, u), bundle) for u in range(args.users)]
    params = SamplingParams(max_new_tokens=args.tokens)

    lock = threading.Lock()
    done = {"previews": 0, "erases_started": 0, "erases_done": 0}
    samples: list[tuple[int, float, float]] = []  # (previews so far, seconds, RSS MB)
    baseline: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    erase_every = max(1, args.previews // max(1, args.erases))

    def after_preview() -> int | None:
        """Count one preview; returns the count when this user should start an erase now."""
        with lock:
            done["previews"] += 1
            n = done["previews"]
            if n == args.warm:
                baseline.append(rss_mb())
                samples.append((n, time.perf_counter() - t0, baseline[0]))
            elif n % args.every == 0:
                samples.append((n, time.perf_counter() - t0, rss_mb()))
                print(f"  {n:5d} previews  {samples[-1][1]:7.0f} s  RSS {samples[-1][2]:8.1f} MB  "
                      f"erases {done['erases_done']}/{done['erases_started']}", flush=True)
            if n % erase_every == 0 and done["erases_started"] < args.erases:
                done["erases_started"] += 1
                return done["erases_started"]
            return None

    def user(u: int) -> None:
        owner = f"user-{u}"
        mine: list[str] = []
        i = 0
        try:
            while True:
                with lock:
                    if done["previews"] >= args.previews:
                        break
                prompt = PROMPTS[(u + i) % len(PROMPTS)]
                for _side, _piece in stream_pair(bundle, prompt, adapters[u], params, settings, batcher=batcher):
                    pass
                i += 1
                k = after_preview()
                if k is not None:
                    concept = CONCEPTS[k % len(CONCEPTS)]
                    mine.append(manager.start("erase", f"Erase '{concept}'",
                                              erase_job(bundle, corpus, concept, args.method, None, EraseOptions()),
                                              owner=owner))
                for job_id in list(mine):  # a page polls its jobs and reads each result once
                    status = manager.status(job_id, owner)
                    if status is not None and not status.live:
                        if status.state != "done":
                            errors.append(f"{owner}'s erase {job_id} {status.state}: {status.error}")
                        manager.result(job_id, owner)
                        mine.remove(job_id)
                        with lock:
                            done["erases_done"] += 1
            for job_id in mine:  # the erases still queued or running at the end
                status = manager.wait(job_id, timeout_s=3600)
                if status is None or status.state != "done":
                    errors.append(f"{owner}'s erase {job_id} did not finish: {status}")
                manager.result(job_id, owner)
                with lock:
                    done["erases_done"] += 1
        except Exception as err:  # noqa: BLE001 - a user's failure is a finding, reported below
            errors.append(f"{owner}: {type(err).__name__}: {err}")

    print(f"{args.users} users on {bundle.model_id}: {args.previews} previews of {args.tokens} tokens, "
          f"{args.erases} erases ({args.method}); RSS {rss_mb():.1f} MB before", flush=True)
    threads = [threading.Thread(target=user, args=(u,)) for u in range(args.users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    manager.sweep()
    end = rss_mb()
    samples.append((done["previews"], time.perf_counter() - t0, end))
    growth = 100 * (end / baseline[0] - 1) if baseline else float("nan")
    print(f"  {done['previews']:5d} previews  {samples[-1][1]:7.0f} s  RSS {end:8.1f} MB  (end)")
    for e in errors:
        print("ERROR:", e)
    out = ROOT / "bench" / "results" / f"server-memory-{args.model}.json"
    out.write_text(json.dumps({
        "model": bundle.model_id, "users": args.users, "previews": done["previews"], "erases": done["erases_done"],
        "method": args.method, "tokens": args.tokens, "baseline_mb": baseline[0] if baseline else None,
        "end_mb": end, "growth_pct": growth, "samples": samples, "errors": errors,
        "batches": batcher.n_batches, "when": time.strftime("%Y-%m-%d %H:%M"),
    }, indent=1))
    print(f"server memory: {args.users} users, {done['previews']} previews, {done['erases_done']} erases: "
          f"RSS {baseline[0] if baseline else float('nan'):.0f} MB after {args.warm} previews, {end:.0f} MB at "
          f"the end, growth {growth:+.1f}%")


if __name__ == "__main__":
    main()
