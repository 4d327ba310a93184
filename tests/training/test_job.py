"""The training job end to end: export contents, fresh-process reload, resume, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.artifact.versions import read_manifest, resolve_version, verify_artifact
from tests.conftest import TINY_TRAIN_OVERRIDES

REPO = Path(__file__).resolve().parents[2]
RECSYS = [sys.executable, "-m", "recsys.cli"]


def test_artifact_has_every_part_and_valid_checksums(trained_artifact: Path) -> None:
    manifest = verify_artifact(trained_artifact)
    for part in (
        "query_model/saved_model.pb",
        "candidate_model/saved_model.pb",
        "vocabularies.json",
        "config.json",
        "items.parquet",
        "item_embeddings.npy",
        "index/index.json",
    ):
        assert part in manifest.files, part
    assert not any(name.endswith(".pkl") for name in manifest.files)  # no pickle anywhere
    assert resolve_version(trained_artifact.parent) == trained_artifact  # LATEST points here
    assert manifest.data["split"] == "time"
    assert len(manifest.data["fingerprint"]) == 64


def test_model_beats_chance_by_far(trained_artifact: Path) -> None:
    manifest = read_manifest(trained_artifact)
    n_items = pq.read_metadata(trained_artifact / "items.parquet").num_rows
    recall_100 = manifest.metrics["recall"]["100"]
    # a random ranking finds the next watch in the top 100 with probability 100 / n_items
    assert recall_100 > 3 * 100 / n_items, recall_100


def test_export_reloads_in_a_fresh_process_with_the_same_embeddings(
    trained_artifact: Path, tiny_world: Path, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np, pyarrow.parquet as pq
        import recsys, tensorflow as tf
        art = {str(trained_artifact)!r}
        cfg = json.load(open(art + "/config.json"))
        items = pq.read_table(art + "/items.parquet").to_pandas()
        items_ds = pq.read_table({str(tiny_world / "items.parquet")!r})
        emb = np.stack(items_ds.column("content_embedding").to_numpy(zero_copy_only=False))
        age = np.maximum(cfg["reference_time"] - items["upload_time"].to_numpy(), 0) / 86400.0
        serve = tf.saved_model.load(art + "/candidate_model").signatures["serving_default"]
        out = serve(
            item_id=tf.constant(items["item_id"].tolist()),
            channel=tf.constant(items["channel"].fillna("").tolist()),
            category=tf.constant(items["category"].fillna("").tolist()),
            title=tf.constant(items["title"].fillna("").tolist()),
            upload_age=tf.constant(age, tf.float32),
            content_embedding=tf.constant(emb.astype(np.float32)),
        )["candidate_embedding"].numpy()
        np.save(sys.argv[1], out)
        """
    )
    out = tmp_path / "fresh.npy"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, cwd=REPO, timeout=300)
    fresh = np.load(out)
    exported = np.load(trained_artifact / "item_embeddings.npy")
    assert fresh.shape == exported.shape
    np.testing.assert_allclose(fresh, exported, atol=1e-5)


def _train_cmd(
    data: Path,
    artifacts: Path,
    epochs: int,
    extra: list[str] | None = None,
    index: bool = False,
) -> list[str]:
    sets = [arg for o in TINY_TRAIN_OVERRIDES for arg in ("--set", o)]
    return [
        *RECSYS,
        "train",
        "--data",
        str(data),
        "--artifacts",
        str(artifacts),
        "--name",
        "m",
        "--epochs",
        str(epochs),
        *([] if index else ["--no-index"]),
        *sets,
        *(extra or []),
    ]


def _train_ok(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a training command to completion; fail the test with its stderr tail if it fails."""
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint(tiny_world: Path, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    cmd = _train_cmd(tiny_world, artifacts, epochs=12, extra=["--max-eval-queries", "200"])
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    work = artifacts / "m" / ".work"
    deadline = time.monotonic() + 240
    # Wait for the first epoch checkpoint, let another epoch run, then kill the process hard.
    while time.monotonic() < deadline and proc.poll() is None:
        if list(work.rglob("ckpt-*.index")):
            time.sleep(0.5)
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (artifacts / "m" / "LATEST").exists()  # nothing exported by the killed run
    done = _train_ok(cmd)
    assert "resumed from checkpoint" in done.stderr
    manifest = read_manifest(resolve_version(artifacts / "m"))
    assert manifest.metrics["training"]["resumed_from_epoch"] > 0
    assert len(manifest.metrics["loss"]) < 12  # this process ran only the remaining epochs


@pytest.mark.slow
def test_a_scann_export_searches_at_the_setting_tuned_on_held_out_queries(
    tiny_world: Path, tmp_path: Path
) -> None:
    from recsys.index.registry import load_index
    from recsys.index.scann_index import ScannIndex

    extra = ["--index-kind", "scann", "--max-eval-queries", "300"]
    _train_ok(_train_cmd(tiny_world, tmp_path, 1, extra, index=True))
    version = resolve_version(tmp_path / "m")
    manifest = verify_artifact(version)
    tuning = manifest.index["tuning"]
    assert manifest.index["kind"] == "scann"  # 1500 videos: "auto" would have chosen exact
    assert (tuning["query_source"], tuning["num_queries"]) == (
        "eval",
        manifest.metrics["eval_queries"],
    )
    assert tuning["met_target"]
    assert tuning["recall"] >= 0.95
    index = load_index(version / "index")
    assert isinstance(index, ScannIndex)
    assert (index.config.num_leaves_to_search, index.config.reorder_k) == (
        tuning["leaves_to_search"],
        tuning["reorder_k"],
    )


@pytest.mark.slow
def test_same_seed_same_run(tiny_world: Path, tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        _train_ok(_train_cmd(tiny_world, tmp_path / f"a{i}", 1, ["--max-eval-queries", "300"]))
        version = resolve_version(tmp_path / f"a{i}" / "m")
        runs.append(
            (read_manifest(version).metrics["loss"], np.load(version / "item_embeddings.npy"))
        )
    assert runs[0][0] == runs[1][0]  # identical loss history
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.slow
def test_two_worker_multiworker_run_trains_and_exports(tiny_world: Path, tmp_path: Path) -> None:
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    workers = [f"127.0.0.1:{p}" for p in ports]
    artifacts = tmp_path / "artifacts"
    procs = []
    for index in range(2):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        procs.append(
            subprocess.Popen(
                _train_cmd(tiny_world, artifacts, epochs=1, extra=["--max-eval-queries", "300"]),
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        errors.append(err)
        assert proc.returncode == 0, err[-3000:]
    assert "MultiWorkerMirroredStrategy" in errors[0]
    version = resolve_version(artifacts / "m")
    manifest = verify_artifact(version)
    assert manifest.metrics["training"]["replicas"] == 2
    # only the chief exported: one version
    assert [p.name for p in (artifacts / "m").iterdir() if p.name.startswith("v")] == ["v0001"]
