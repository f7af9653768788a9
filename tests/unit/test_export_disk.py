"""Users' exports on a shared server: a quota per owner, checked before anything is written,
an expiry the job manager's sweep applies, and deletion of one's own exports only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.config import ExportLimits, Settings
from workbench.edits import EditSpec, compile_spec
from workbench.exports.disk import (
    QuotaExceeded,
    check_quota,
    delete_owner_export,
    expire_exports,
    export_bytes,
    folder_bytes,
    owner_exports,
    owner_usage,
)
from workbench.jobs import JobManager, export_dir, export_job
from workbench.models import ModelBundle
from workbench.progress import FileProgress

DAY = 86400.0


def _export(root: Path, owner: str, name: str, size: int, age_s: float = 0.0, now: float = 1e9) -> Path:
    folder = root / owner / name
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * size)
    os.utime(folder, (now - age_s, now - age_s))
    return folder


def test_usage_counts_only_the_owners_published_exports(tmp_path: Path) -> None:
    _export(tmp_path, "alice", "a-1", 1000)
    _export(tmp_path, "alice", "a-2", 500)
    _export(tmp_path, "alice", ".a-3.tmp-123-abcd", 9999)  # atomic.py still writing: not an export yet
    _export(tmp_path, "bob", "b-1", 7000)
    assert owner_usage(tmp_path, "alice") == 1500
    assert owner_usage(tmp_path, "bob") == 7000 and owner_usage(tmp_path, "carol") == 0
    assert [p.name for p, _, _ in owner_exports(tmp_path, "alice")] == ["a-1", "a-2"]
    assert folder_bytes(tmp_path / "alice") == 1000 + 500 + 9999


def test_an_export_past_the_quota_is_refused_with_what_is_used(tmp_path: Path) -> None:
    limits = ExportLimits(quota_bytes=3 * 1024 * 1024, ttl_s=DAY)
    _export(tmp_path, "alice", "a-1", 2 * 1024 * 1024)
    check_quota(tmp_path, "alice", 1024 * 1024, limits)  # exactly at the quota: allowed
    check_quota(tmp_path, "bob", 3 * 1024 * 1024, limits)  # another owner's usage is not alice's
    with pytest.raises(QuotaExceeded, match=r"needs about 2 MB and your exports already use 2 MB of your 3 MB quota"):
        check_quota(tmp_path, "alice", 2 * 1024 * 1024, limits)


def test_expiry_deletes_old_exports_of_every_owner_and_keeps_new_ones(tmp_path: Path) -> None:
    now = 2e9
    limits = ExportLimits(ttl_s=7 * DAY)
    old = _export(tmp_path, "alice", "old", 10, age_s=8 * DAY, now=now)
    new = _export(tmp_path, "alice", "new", 10, age_s=1 * DAY, now=now)
    bob = _export(tmp_path, "bob", "old", 10, age_s=30 * DAY, now=now)
    assert sorted(expire_exports(tmp_path, limits, now)) == sorted([old, bob])
    assert not old.exists() and not bob.exists() and new.exists()
    assert not (tmp_path / "bob").exists()  # an owner left with nothing loses the empty folder


def test_the_job_managers_sweep_runs_the_export_expiry(tmp_path: Path) -> None:
    now = [3e9]
    exports = tmp_path / "exports"
    stale = _export(exports, "alice", "stale", 10, age_s=10 * DAY, now=now[0])
    limits = ExportLimits(ttl_s=7 * DAY)
    manager = JobManager(tmp_path / "jobs", clock=lambda: now[0],
                         on_sweep=lambda t: expire_exports(exports, limits, t))
    assert not stale.exists()  # the sweep at start-up
    later = _export(exports, "alice", "later", 10, age_s=0.0, now=now[0])
    now[0] += 8 * DAY
    manager.sweep()
    assert not later.exists()


def test_only_the_owner_deletes_an_export_and_only_by_its_name(tmp_path: Path) -> None:
    mine = _export(tmp_path, "alice", "mine", 10)
    with pytest.raises(ValueError, match="You have no export named 'mine'"):
        delete_owner_export(tmp_path, "bob", "mine")
    with pytest.raises(ValueError, match="no export named"):
        delete_owner_export(tmp_path, "alice", "../bob/x")
    assert mine.exists()
    delete_owner_export(tmp_path, "alice", "mine")
    assert not mine.exists()


def test_export_job_refuses_past_the_quota_before_writing(tiny_bundle: ModelBundle, tmp_path: Path) -> None:
    spec = EditSpec.from_dict({"name": "quota", "model": {"id": "tiny", "weights_sha256": tiny_bundle.weights_sha256},
                               "operations": [{"kind": "ablate_value_vectors", "layer": 1, "neurons": [3, 5]}]})
    adapter = compile_spec(spec, tiny_bundle)
    need = export_bytes(tiny_bundle, adapter, "checkpoint")
    distinct = {p.data_ptr(): p.numel() * p.element_size() for p in tiny_bundle.hf_model.parameters()}
    assert need >= sum(distinct.values())  # every weight, the tied embedding once
    settings = Settings(cache_dir=tmp_path)
    out = export_dir(settings.exports_dir, "alice", spec, "checkpoint")
    small = ExportLimits(quota_bytes=need // 2, ttl_s=DAY)
    run = export_job(tiny_bundle, adapter, spec, out, fmt="checkpoint", owner="alice", limits=small)
    with pytest.raises(QuotaExceeded):
        run(FileProgress(tmp_path / "p.json"))
    assert not out.exists() and owner_usage(settings.exports_dir, "alice") == 0
    run = export_job(tiny_bundle, adapter, spec, out, fmt="checkpoint", owner="alice",
                     limits=ExportLimits(quota_bytes=2 * need, ttl_s=DAY))
    summary, path = run(FileProgress(tmp_path / "q.json"))
    assert path == out and 0 < owner_usage(settings.exports_dir, "alice") <= need
    assert export_bytes(tiny_bundle, adapter, "lora") < need
