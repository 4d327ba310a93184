"""Two workers of a MultiWorkerMirroredStrategy read Beam-written shards: each example once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recsys.dataset.splits import Split
from recsys.examples.beam_building import build_examples_beam
from recsys.examples.building import LABEL_TIME, read_examples
from recsys.features import contract as F
from recsys.features.contract import FeatureConfig
from tests.training.test_strategy import _env, _free_ports

# Columns that identify an example in what training is fed (the label's user and time are
# not fed): the label video and the whole query context.
IDENTITY = (
    F.ITEM_INDEX,
    F.HISTORY,
    F.SEARCH_TOKENS,
    F.LAST_SEARCH_TOKENS,
    F.EXAMPLE_AGE,
    F.SINCE_LAST_WATCH,
    F.SINCE_LAST_SEARCH,
    F.COUNTRY,
    F.AGE,
)

# One worker: the job's input function (make_dataset, this worker's share via the input
# context) under MultiWorkerMirroredStrategy, one pass on each input path; writes the rows
# it was fed (as row digests).
_WORKER_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import numpy as np
    from recsys_training.strategy import choose_strategy

    strategy = choose_strategy()  # before any other TensorFlow op
    from recsys.examples.building import load_catalog
    from recsys.examples.pipeline import make_dataset
    from recsys.features.contract import FeatureConfig
    from recsys.features.tables import ItemTable
    from recsys.features.vocab import Vocabularies

    examples, data, out = sys.argv[1:4]
    identity = json.loads(sys.argv[4])
    vocabs = Vocabularies.load(examples + "/vocabularies.json")
    _, items_df, content = load_catalog(data)
    items = ItemTable.build(items_df, content, vocabs, FeatureConfig(max_history=8))
    GLOBAL_BATCH = 64

    def digests(in_memory):
        def dataset_fn(ctx):
            return make_dataset(
                examples, "train", items, ctx.get_per_replica_batch_size(GLOBAL_BATCH),
                seed=1, shard_index=ctx.input_pipeline_id,
                num_shards=ctx.num_input_pipelines, in_memory=in_memory,
            )

        seen = []
        for batch in strategy.distribute_datasets_from_function(dataset_fn):
            (local,) = strategy.experimental_local_results(batch)
            if len(local[identity[0]]) == 0:
                continue  # this worker's share ended; the other's last batch is still going
            cols = [np.asarray(local[k]).reshape(len(local[k]), -1) for k in identity]
            for i in range(len(cols[0])):
                seen.append(hashlib.sha1(b"".join(c[i].tobytes() for c in cols)).hexdigest())
        return seen

    json.dump({
        "replicas": strategy.num_replicas_in_sync,
        "streamed": digests(False),
        "in_memory": digests(True),
    }, open(out, "w"))
    """
)


def _digest(rows: dict[str, np.ndarray], i: int) -> str:
    import hashlib

    cols = [rows[k].reshape(len(rows[k]), -1) for k in IDENTITY]
    return hashlib.sha1(b"".join(c[i].tobytes() for c in cols)).hexdigest()


def _run_workers(script: Path, args: list[str], tmp_path: Path) -> list[dict[str, object]]:
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"worker{index}.log", "w")  # noqa: SIM115 (closed below)
        cmd = [sys.executable, str(script), *args, str(tmp_path / f"out{index}.json")]
        cmd.append(json.dumps(list(IDENTITY)))
        procs.append(
            (subprocess.Popen(cmd, env=_env(tf_config), stdout=log, stderr=subprocess.STDOUT), log)
        )
    deadline = time.monotonic() + 240
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for index, (proc, _) in enumerate(procs):
        output = (tmp_path / f"worker{index}.log").read_text()[-3000:]
        assert proc.returncode == 0, f"worker {index} failed:\n{output}"
    return [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]


@pytest.mark.slow
def test_two_workers_see_every_beam_built_example_once_per_epoch(
    tiny_world: Path, tmp_path: Path
) -> None:
    examples = tmp_path / "examples"
    config = FeatureConfig(max_history=8)
    # Three partitions: shards of different sizes, more shards than workers.
    built = build_examples_beam(tiny_world, examples, Split("time"), config, partitions=3)
    rows = read_examples(examples, "train")
    assert len(rows[LABEL_TIME]) == built.counts["train"]
    expected = Counter(_digest(rows, i) for i in range(built.counts["train"]))

    script = tmp_path / "worker.py"
    script.write_text(_WORKER_SCRIPT)
    results = _run_workers(script, [str(examples), str(tiny_world)], tmp_path)
    for path in ("streamed", "in_memory"):
        shares = [r[path] for r in results]
        assert all(r["replicas"] == 2 for r in results)
        # Each worker reads its own share: half the examples each, to within one.
        assert abs(len(shares[0]) - len(shares[1])) <= 1, path
        # Together, every example exactly once in the epoch (digests as a multiset, since
        # two examples may carry identical features).
        assert Counter(shares[0]) + Counter(shares[1]) == expected, path


@pytest.mark.slow
def test_train_reads_a_given_beam_built_examples_folder(tiny_world: Path, tmp_path: Path) -> None:
    from recsys.config import load_config
    from recsys_training.job import train
    from tests.conftest import TINY_TRAIN_OVERRIDES

    config = load_config(None, TINY_TRAIN_OVERRIDES)
    examples = tmp_path / "examples"
    built = build_examples_beam(
        tiny_world, examples, Split("time"), config.features, seed=config.train.seed
    )
    result = train(
        tiny_world,
        tmp_path / "artifacts",
        config=config,
        epochs=1,
        max_eval_queries=200,
        build_index=False,
        progress=False,
        examples=str(examples),
    )
    assert result.examples_dir == str(examples)
    assert result.metrics["training"]["examples"] == built.counts["train"]
    assert not list(
        (tmp_path / "artifacts" / "default" / ".work").glob("examples-*")
    )  # not rebuilt
