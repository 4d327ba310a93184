"""Generate the synthetic YouTube-like world: simulate sessions day by day, write the dataset.

The static world (users, channels, videos, hidden interests) comes from
:mod:`recsys_data.world`; this module simulates every user's sessions of each day in
parallel, step by step, and appends each day's events to the canonical dataset. The exact
generative model is in ``data/README.md``; :mod:`recsys_data.oracle` recomputes its
next-watch probabilities.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.dataset.io import DatasetMeta, DatasetWriter
from recsys_data.world import (
    DAY,
    PROBABILITIES_FILE,
    TRUTH_FILE,
    WORLD_FILE,
    World,
    WorldConfig,
    base_weights,
    check_window,
    rng_for,
    sample_world,
)

log = logging.getLogger(__name__)

SLOT_SECONDS = 7_200  # sessions live in distinct two-hour slots of the day
SESSION_START_WINDOW = 1_800  # a session starts in its slot's first 30 minutes
SESSION_MAX_SPAN = 5_400  # and its last event is before slot start + 90 minutes
MAX_WATCH_GAP = 1_100  # seconds credited to watching, so a gap stays under 20 minutes
NONE, SEARCH, WATCH = 0, 1, 2  # previous event in the session


@dataclass
class _Catalog:
    """Videos in sampling order (by topic, then region) and the word -> videos index.

    Sorting by topic then region makes every topic, and every (topic, region) group, a
    contiguous range, so one cumulative sum of the day's weights serves every conditional
    distribution (and the region boost is a two-part mixture over nested ranges).
    """

    order: np.ndarray  # [I] sampling position -> items.parquet row
    topic: np.ndarray  # [I] in sampling order
    region: np.ndarray
    quality: np.ndarray
    upload_day: np.ndarray
    duration: np.ndarray
    topic_region_offsets: np.ndarray  # [T * R + 1] start of each (topic, region) group
    postings: np.ndarray  # sampling positions of each word's videos, by (word, region)
    word_region_offsets: np.ndarray  # [V * R + 1]
    title_pad: np.ndarray | None  # [I, L] word ids (-1 padded), only to record probabilities


def _catalog(world: World, duration: np.ndarray, with_titles: bool) -> _Catalog:
    """Sort the videos for sampling and build the word -> videos index."""
    n_regions, n_topics, n_items = len(world.config.regions), world.num_topics, world.num_items
    n_vocab = len(world.vocabulary)
    order = np.lexsort((world.item_region, world.item_topic))
    topic, region = world.item_topic[order], world.item_region[order]
    key = topic.astype(np.int64) * n_regions + region
    rank = np.empty(n_items, dtype=np.int64)
    rank[order] = np.arange(n_items)
    title_len = np.diff(world.title_offsets)
    pos = rank[np.repeat(np.arange(n_items), title_len)]
    word_key = world.title_words.astype(np.int64) * n_regions + region[pos]
    by_word = np.lexsort((pos, word_key))
    title_pad = None
    if with_titles:
        width = int(title_len.max()) if n_items else 0
        title_pad = np.full((n_items, width), -1, dtype=np.int32)
        column = np.arange(len(world.title_words)) - np.repeat(world.title_offsets[:-1], title_len)
        title_pad[pos, column] = world.title_words
    return _Catalog(
        order=order,
        topic=topic,
        region=region,
        quality=world.item_quality[order],
        upload_day=world.item_upload_day[order],
        duration=duration[order],
        topic_region_offsets=np.searchsorted(key, np.arange(n_topics * n_regions + 1)),
        postings=pos[by_word],
        word_region_offsets=np.searchsorted(word_key[by_word], np.arange(n_vocab * n_regions + 1)),
        title_pad=title_pad,
    )


@dataclass
class _DayTables:
    """One day's sampling tables: cumulative weights and normalisers per region."""

    weight: np.ndarray  # [I] region-free weights, sampling order
    cum: np.ndarray  # [I + 1] cumulative weights
    cum_postings: np.ndarray  # [P + 1] cumulative weights along the postings
    z_topic: np.ndarray  # [R, T] sum of region-boosted weights per topic
    z_global: np.ndarray  # [R]
    topic_cdf: np.ndarray  # [R * T] per-region topic CDFs, region r offset by r
    z_word: np.ndarray  # [R, V]


def _boosted_sums(
    cum: np.ndarray, offsets: np.ndarray, groups: int, n_regions: int, boost: float
) -> np.ndarray:
    """Per-region totals ``[R, groups]`` of ranges split into region sub-ranges."""
    per_region = np.diff(cum[offsets]).reshape(groups, n_regions)
    return per_region.sum(axis=1)[None, :] + (boost - 1.0) * per_region.T


def _sample_ranges(
    cum: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    sub_lo: np.ndarray,
    sub_hi: np.ndarray,
    boost: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw j in [lo, hi) with P(j) ∝ weight_j * (boost if sub_lo <= j < sub_hi else 1).

    ``cum`` is the cumulative weight array; the boosted distribution is the mixture of the
    whole range (mass m_all) and the sub-range ((boost - 1) * m_sub). Draws that floating
    point rounding puts on a range edge are redrawn, so zero-weight entries never come out.
    """
    out = np.empty(len(lo), dtype=np.int64)
    todo = np.arange(len(lo))
    last = len(cum) - 2
    while todo.size:
        lo_, hi_, slo, shi = lo[todo], hi[todo], sub_lo[todo], sub_hi[todo]
        m_all = cum[hi_] - cum[lo_]
        m_sub = (cum[shi] - cum[slo]) * (boost - 1.0)
        u = rng.random(todo.size) * (m_all + m_sub)
        extra = u >= m_all
        target = cum[lo_] + u
        if boost > 1.0:
            target = np.where(extra, cum[slo] + (u - m_all) / (boost - 1.0), target)
        j = _locate(cum, target) - 1
        jc = np.clip(j, 0, last)
        ok = (j >= lo_) & (j < hi_) & (cum[jc + 1] > cum[jc]) & (~extra | ((j >= slo) & (j < shi)))
        out[todo[ok]] = j[ok]
        todo = todo[~ok]
    return out


def _locate(sorted_values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``searchsorted(side="right")`` with the targets sorted first: twice as fast on big
    arrays, because numpy narrows each search with the previous result (cache locality)."""
    by_value = np.argsort(targets)
    out = np.empty(len(targets), dtype=np.int64)
    out[by_value] = np.searchsorted(sorted_values, targets[by_value], side="right")
    return out


class _Simulator:
    """Simulates whole days of sessions for every user at once."""

    def __init__(self, world: World, duration: np.ndarray, record: bool) -> None:
        cfg = world.config
        self.world, self.config, self.record = world, cfg, record
        self.n_regions, self.n_topics = len(cfg.regions), cfg.topics
        self.cat = _catalog(world, duration, with_titles=record)
        n_groups = len(world.demographic_theta)
        # Row-wise topic sampling as one searchsorted: row g's CDF is shifted by g.
        self.demo_cdf = (
            np.cumsum(world.demographic_theta, axis=1) + np.arange(n_groups)[:, None]
        ).ravel()
        self.personal_cdf = np.cumsum(world.personal_weights, axis=1)
        self.word_cdf = np.cumsum(_zipf(cfg.words_per_topic, cfg.word_zipf))
        self.query_len_cdf = np.cumsum(cfg.query_word_probs) / sum(cfg.query_word_probs)
        self.slot_weights = np.asarray(cfg.slot_weights, dtype=np.float64)

    # ------------------------------------------------------------------ tables

    def day_tables(self, day: int) -> _DayTables:
        """Weights, cumulative sums and normalisers of ``day``."""
        cat, cfg, n_regions, n_topics = self.cat, self.config, self.n_regions, self.n_topics
        weight = base_weights(cfg, cat.quality, cat.upload_day, day)
        cum = np.zeros(len(weight) + 1)
        np.cumsum(weight, out=cum[1:])
        cum_postings = np.zeros(len(cat.postings) + 1)
        np.cumsum(weight[cat.postings], out=cum_postings[1:])
        boost = cfg.region_boost
        z_topic = _boosted_sums(cum, cat.topic_region_offsets, n_topics, n_regions, boost)
        z_global = z_topic.sum(axis=1)
        topic_cdf = (
            np.cumsum(z_topic, axis=1) / z_global[:, None] + np.arange(n_regions)[:, None]
        ).ravel()
        n_vocab = len(self.world.vocabulary)
        z_word = _boosted_sums(cum_postings, cat.word_region_offsets, n_vocab, n_regions, boost)
        return _DayTables(weight, cum, cum_postings, z_topic, z_global, topic_cdf, z_word)

    # ---------------------------------------------------------------- sampling

    def interest_topics(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Topics drawn from theta_u (the demographic / personal mixture, exactly)."""
        world, n_topics = self.world, self.n_topics
        demographic = rng.random(len(users)) < self.config.demographic_weight
        group = world.user_group[users].astype(np.int64)
        k_demo = np.searchsorted(self.demo_cdf, group + rng.random(len(users)), side="right")
        k_demo = np.minimum(k_demo - group * n_topics, n_topics - 1)
        slot = (self.personal_cdf[users] <= rng.random(len(users))[:, None]).sum(axis=1)
        slot = np.minimum(slot, self.personal_cdf.shape[1] - 1)
        k_personal = world.personal_topics[users, slot]
        return np.where(demographic, k_demo, k_personal).astype(np.int64)

    def global_topics(
        self, tables: _DayTables, regions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Topics drawn ∝ their region-boosted weight: the first step of P_global."""
        n_topics = self.n_topics
        out = np.empty(len(regions), dtype=np.int64)
        todo = np.arange(len(regions))
        while todo.size:
            r = regions[todo].astype(np.int64)
            k = (
                np.searchsorted(tables.topic_cdf, r + rng.random(todo.size), side="right")
                - r * n_topics
            )
            k = np.clip(k, 0, n_topics - 1)
            ok = tables.z_topic[r, k] > 0
            out[todo[ok]] = k[ok]
            todo = todo[~ok]
        return out

    def items_in_topics(
        self, tables: _DayTables, topics: np.ndarray, regions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Videos drawn from P_topic(. | k) for a region-r user (sampling positions)."""
        n_regions, off = self.n_regions, self.cat.topic_region_offsets
        base = topics * n_regions
        return _sample_ranges(
            tables.cum,
            off[base],
            off[base + n_regions],
            off[base + regions],
            off[base + regions + 1],
            self.config.region_boost,
            rng,
        )

    def items_with_words(
        self, tables: _DayTables, words: np.ndarray, regions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Videos drawn ∝ weight among those whose title holds ``words`` (one each)."""
        n_regions, off = self.n_regions, self.cat.word_region_offsets
        base = words.astype(np.int64) * n_regions
        j = _sample_ranges(
            tables.cum_postings,
            off[base],
            off[base + n_regions],
            off[base + regions],
            off[base + regions + 1],
            self.config.region_boost,
            rng,
        )
        return self.cat.postings[j]

    def query_words(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """1-3 distinct Zipf-drawn words of each topic's vocabulary: ``[n, 3]``, -1 padded."""
        cfg, n = self.config, len(topics)
        max_query, per_topic = len(self.query_len_cdf), cfg.words_per_topic
        length = np.minimum(
            np.searchsorted(self.query_len_cdf, rng.random(n), side="right"), max_query - 1
        )
        words = np.full((n, max_query), -1, dtype=np.int64)
        for s in range(max_query):
            todo = np.flatnonzero(length >= s)
            while todo.size:
                rank = np.minimum(
                    np.searchsorted(self.word_cdf, rng.random(todo.size), "right"), per_topic - 1
                )
                cand = topics[todo] * per_topic + rank
                dup = (words[todo, :s] == cand[:, None]).any(axis=1)
                words[todo[~dup], s] = cand[~dup]
                todo = todo[dup]
        return words

    def watches(
        self,
        tables: _DayTables,
        users: np.ndarray,
        regions: np.ndarray,
        context: np.ndarray,
        prev_topic: np.ndarray,
        prev_words: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Next-watch videos (sampling positions) from the exact mixture of the README."""
        cfg, n = self.config, len(users)
        item = np.full(n, -1, dtype=np.int64)
        u = rng.random(n)
        from_search = np.flatnonzero((context == SEARCH) & (u < cfg.search_mix))
        from_prev = (context == WATCH) & (u < cfg.topic_mix)
        if from_search.size:
            # Pick one query word uniformly; a word with no watchable video falls to P_base.
            n_words = (prev_words[from_search] >= 0).sum(axis=1)
            slot = np.minimum(
                (rng.random(from_search.size) * n_words).astype(np.int64), n_words - 1
            )
            word = prev_words[from_search, slot]
            r = regions[from_search]
            has = tables.z_word[r, word] > 0
            rows = from_search[has]
            item[rows] = self.items_with_words(tables, word[has], r[has], rng)
        topic = np.where(from_prev, prev_topic, -1)
        base = (item < 0) & ~from_prev
        interest = base & (rng.random(n) < cfg.base_topic_share)
        topic[interest] = self.interest_topics(users[interest], rng)
        # P_topic of a topic with nothing watchable is defined as P_global.
        empty = (topic >= 0) & (tables.z_topic[regions, np.maximum(topic, 0)] == 0)
        glob = (base & ~interest) | empty
        topic[glob] = self.global_topics(tables, regions[glob], rng)
        need = item < 0
        item[need] = self.items_in_topics(tables, topic[need], regions[need], rng)
        return item

    def watch_probability(
        self,
        tables: _DayTables,
        users: np.ndarray,
        regions: np.ndarray,
        context: np.ndarray,
        prev_topic: np.ndarray,
        prev_words: np.ndarray,
        pos: np.ndarray,
    ) -> np.ndarray:
        """The mixture probability of each drawn video, from the sampling tables (debug)."""
        cfg, cat = self.config, self.cat
        assert cat.title_pad is not None
        rows = np.arange(len(users))
        w = tables.weight[pos] * np.where(cat.region[pos] == regions, cfg.region_boost, 1.0)
        k = cat.topic[pos]
        p_own = w / tables.z_topic[regions, k]
        p_global = w / tables.z_global[regions]
        theta = self.world.theta(users)
        missing = (theta * (tables.z_topic[regions] == 0)).sum(axis=1)
        share = cfg.base_topic_share
        p_base = share * (theta[rows, k] * p_own + missing * p_global) + (1 - share) * p_global
        z_prev = tables.z_topic[regions, np.maximum(prev_topic, 0)]
        p_prev = np.where(
            z_prev > 0, (k == prev_topic) * w / np.where(z_prev > 0, z_prev, 1), p_global
        )
        n_words = np.maximum((prev_words >= 0).sum(axis=1), 1)
        p_search = np.zeros(len(users))
        for s in range(prev_words.shape[1]):
            word = prev_words[:, s]
            z_word = tables.z_word[regions, np.maximum(word, 0)]
            in_title = (cat.title_pad[pos] == word[:, None]).any(axis=1)
            term = np.where(z_word > 0, in_title * w / np.where(z_word > 0, z_word, 1), p_base)
            p_search += np.where(word >= 0, term, 0.0)
        p_search /= n_words
        return np.where(
            context == SEARCH,
            cfg.search_mix * p_search + (1 - cfg.search_mix) * p_base,
            np.where(
                context == WATCH, cfg.topic_mix * p_prev + (1 - cfg.topic_mix) * p_base, p_base
            ),
        )

    # -------------------------------------------------------------------- days

    def day(self, day: int) -> dict[str, np.ndarray]:
        """Simulate ``day``: every event's user, time, kind, video, query words, fraction."""
        cfg, world, cat = self.config, self.world, self.cat
        rng = rng_for(cfg, 1, day)
        tables = self.day_tables(day)
        # Sessions: Poisson(activity) per user, in distinct two-hour slots (busier evenings);
        # exponential keys / weight, smallest first = weighted sampling without replacement.
        count = np.minimum(rng.poisson(world.user_activity), cfg.max_sessions_per_day)
        who = np.flatnonzero(count)
        keys = -np.log(rng.random((who.size, 12))) / self.slot_weights
        slots = np.argsort(keys, axis=1)
        chosen = np.arange(12)[None, :] < count[who][:, None]
        users = np.repeat(who, count[who])
        slot_start = cfg.start_time + day * DAY + slots[chosen].astype(np.int64) * SLOT_SECONDS
        now = slot_start + rng.integers(0, SESSION_START_WINDOW, size=users.size)
        deadline = slot_start + SESSION_MAX_SPAN
        regions = world.user_region[users].astype(np.int64)
        n_sessions, max_query = users.size, len(self.query_len_cdf)
        context = np.full(n_sessions, NONE, dtype=np.int8)
        prev_topic = np.full(n_sessions, -1, dtype=np.int64)
        prev_words = np.full((n_sessions, max_query), -1, dtype=np.int64)
        theme = np.full(n_sessions, -1, dtype=np.int64)

        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("user", "time", "search", "item", "words", "fraction", "prob")
        }
        active = np.arange(n_sessions)
        for step in range(cfg.max_steps):
            if not active.size:
                break
            p_search = cfg.search_prob_start if step == 0 else cfg.search_prob
            is_search = rng.random(active.size) < p_search
            gap = np.empty(active.size, dtype=np.int64)

            s = active[is_search]
            if s.size:
                themed = (theme[s] >= 0) & (rng.random(s.size) < cfg.search_theme_prob)
                topic = theme[s].copy()
                topic[~themed] = self.interest_topics(users[s[~themed]], rng)
                words = self.query_words(topic, rng)
                self._emit(parts, users[s], now[s], True, np.full(s.size, -1), words, None, None)
                gap[is_search] = rng.integers(3, 61, size=s.size)
                context[s], prev_words[s], theme[s] = SEARCH, words, topic

            s = active[~is_search]
            if s.size:
                pos = self.watches(
                    tables, users[s], regions[s], context[s], prev_topic[s], prev_words[s], rng
                )
                prob = None
                if self.record:
                    prob = self.watch_probability(
                        tables, users[s], regions[s], context[s], prev_topic[s], prev_words[s], pos
                    )
                topic = cat.topic[pos].astype(np.int64)
                interest = world.theta_at(users[s], topic) * self.n_topics
                mean = cfg.fraction_mean_min + (cfg.fraction_mean_max - cfg.fraction_mean_min) * (
                    interest / (interest + cfg.fraction_half_interest)
                )
                c = cfg.fraction_concentration
                fraction = np.clip(rng.beta(mean * c, (1 - mean) * c), 0.01, 1.0).astype(np.float32)
                watched = np.minimum(np.round(fraction * cat.duration[pos]), MAX_WATCH_GAP)
                gap[~is_search] = watched.astype(np.int64) + rng.integers(2, 60, size=s.size)
                none = np.full((s.size, max_query), -1)
                self._emit(parts, users[s], now[s], False, cat.order[pos], none, fraction, prob)
                context[s], prev_topic[s], theme[s] = WATCH, topic, topic

            now[active] += gap
            more = (rng.random(active.size) < cfg.continue_prob) & (now[active] < deadline[active])
            active = active[more]
        return {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}

    @staticmethod
    def _emit(
        parts: dict[str, list[np.ndarray]],
        users: np.ndarray,
        times: np.ndarray,
        search: bool,
        items: np.ndarray,
        words: np.ndarray,
        fraction: np.ndarray | None,
        prob: np.ndarray | None,
    ) -> None:
        n = len(users)
        parts["user"].append(users)
        parts["time"].append(times.copy())
        parts["search"].append(np.full(n, search))
        parts["item"].append(items)
        parts["words"].append(words)
        parts["fraction"].append(np.full(n, np.nan, np.float32) if fraction is None else fraction)
        parts["prob"].append(np.full(n, np.nan) if prob is None else prob)


def _zipf(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return p / p.sum()


class _EventTable:
    """Builds a day's events frame (Arrow-backed columns; ids and query text built in Arrow)."""

    def __init__(self, user_ids: pa.Array, item_ids: pa.Array, vocabulary: np.ndarray) -> None:
        self.user_ids, self.item_ids = user_ids, item_ids
        self.vocabulary = pa.array(vocabulary.tolist(), type=pa.string())
        self.types = pa.array(["watch", "search"])

    def frame(self, ev: dict[str, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
        """Events sorted by time (then user), and the sort order applied."""
        order = np.lexsort((ev["user"], ev["time"]))
        search = ev["search"][order].astype(bool)
        words = ev["words"][order]
        has_word = words >= 0
        offsets = np.zeros(len(order) + 1, dtype=np.int32)
        np.cumsum(has_word.sum(axis=1), out=offsets[1:])
        query_words = pa.ListArray.from_arrays(
            pa.array(offsets),
            self.vocabulary.take(pa.array(words[has_word])),
            mask=pa.array(~search),
        )
        columns = {
            "user_id": self.user_ids.take(pa.array(ev["user"][order])),
            "timestamp": pa.array(ev["time"][order]),
            "type": self.types.take(pa.array(search.astype(np.int8))),
            "item_id": self.item_ids.take(pa.array(ev["item"][order], mask=search)),
            "query": pc.binary_join(query_words, " "),
            "watch_fraction": pa.array(ev["fraction"][order], mask=search),
        }
        frame = pd.DataFrame(
            {k: pd.Series(v, dtype=pd.ArrowDtype(v.type)) for k, v in columns.items()}
        )
        return frame, order


def generate_world(
    config: WorldConfig,
    out: str | Path,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    record_probabilities: bool = False,
) -> DatasetMeta:
    """Generate the world for ``config`` into the dataset folder ``out`` (atomically).

    ``progress(done_days, total_days)`` is called after each simulated day.
    ``record_probabilities`` (for tests) also saves, per event row, the probability the
    generator drew each watch with (NaN for searches) as ``world/sampled_probabilities.npy``.
    """
    check_window(config)
    started = time.perf_counter()
    sampled = sample_world(config)
    world = sampled.world
    log.info(
        "drew the static world: %d users, %d videos, %d topics in %.1f s",
        config.users,
        config.items,
        config.topics,
        time.perf_counter() - started,
    )
    meta = DatasetMeta(
        name=f"synthetic-u{config.users}-i{config.items}-d{config.days}-s{config.seed}",
        source="synthetic",
        description=(
            "Synthetic YouTube-like world (recsys_data.synth): users with demographic and "
            "personal topic interests, channels, videos with bursty freshness, sessions of "
            "searches and watches; ground truth in world/."
        ),
        params=config.to_dict(),
    )
    events = 0
    with DatasetWriter(out, meta, overwrite=overwrite) as writer:
        writer.write_users(sampled.users)
        writer.write_items(sampled.items, sampled.content_embeddings)
        world.save(writer.extra_path(TRUTH_FILE), writer.extra_path(WORLD_FILE))
        table = _EventTable(
            pa.array(sampled.users["user_id"]),
            pa.array(sampled.items["item_id"]),
            world.vocabulary,
        )
        duration = sampled.items["duration"].to_numpy(dtype=np.float64)
        del sampled  # the public tables are written; keep memory to the simulation's needs
        sim = _Simulator(world, duration, record=record_probabilities)
        probabilities: list[np.ndarray] = []
        for day in range(config.days):
            ev = sim.day(day)
            if not ev["user"].size:  # nobody came by today (only in very small worlds)
                if progress is not None:
                    progress(day + 1, config.days)
                continue
            frame, order = table.frame(ev)
            writer.append_events(frame)
            events += len(frame)
            if record_probabilities:
                probabilities.append(ev["prob"][order])
            if progress is not None:
                progress(day + 1, config.days)
        if record_probabilities:
            np.save(writer.extra_path(PROBABILITIES_FILE), np.concatenate(probabilities))
    elapsed = time.perf_counter() - started
    log.info(
        "generated synthetic world %s: %d events over %d days in %.1f s (%.0f events/s)",
        out,
        events,
        config.days,
        elapsed,
        events / max(elapsed, 1e-9),
    )
    return writer.meta
