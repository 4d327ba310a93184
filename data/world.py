"""The synthetic world's static side: config, presets, hidden parameters and public tables.

The world is a generative model of a video platform (see ``data/README.md``). This module
draws everything that does not change from day to day: users and their topic interests,
channels, videos (topic, quality, region, upload day, title, content embedding). The hidden
parameters live in :class:`World`, which the simulator (:mod:`recsys_data.synth`) samples
from and the oracle (:mod:`recsys_data.oracle`) recomputes exact probabilities from; it is
saved with the dataset as ``world/truth.npz`` (numpy, no pickle) plus ``world/world.json``.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

DAY = 86_400
START_TIME = 1_767_225_600  # 2026-01-01T00:00:00Z
WORLD_FORMAT = "recsys-synthetic-world"
WORLD_VERSION = 1
TRUTH_FILE = "world/truth.npz"
WORLD_FILE = "world/world.json"
PROBABILITIES_FILE = "world/sampled_probabilities.npy"

# (ISO 3166-1 alpha-2, region, relative share of users): skewed like a real platform's audience.
COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("US", "north_america", 0.20),
    ("CA", "north_america", 0.03),
    ("MX", "latin_america", 0.05),
    ("BR", "latin_america", 0.08),
    ("AR", "latin_america", 0.02),
    ("CO", "latin_america", 0.02),
    ("GB", "europe", 0.05),
    ("DE", "europe", 0.05),
    ("FR", "europe", 0.04),
    ("ES", "europe", 0.03),
    ("IT", "europe", 0.03),
    ("PL", "europe", 0.02),
    ("NL", "europe", 0.01),
    ("IN", "asia", 0.14),
    ("JP", "asia", 0.04),
    ("KR", "asia", 0.02),
    ("ID", "asia", 0.05),
    ("PH", "asia", 0.03),
    ("NG", "africa_middle_east", 0.03),
    ("EG", "africa_middle_east", 0.02),
    ("ZA", "africa_middle_east", 0.01),
    ("TR", "africa_middle_east", 0.03),
)
CATEGORY_NAMES: tuple[str, ...] = (
    "music", "gaming", "news", "sports", "cooking", "travel", "science", "comedy", "education",
    "film", "autos", "pets", "fashion", "beauty", "fitness", "technology", "diy", "history",
    "nature", "kids", "finance", "health", "art", "dance", "books", "podcasts", "anime",
    "politics", "gardening", "photography", "space", "outdoors", "crafts", "languages",
    "parenting", "real-estate", "architecture", "design", "theater", "esports", "magic", "asmr",
    "vlogs", "unboxing", "animation", "documentary", "fishing", "camping", "chess", "cycling",
)  # fmt: skip
AGE_BUCKETS: tuple[int, ...] = (13, 18, 25, 35, 45, 55, 65)  # lower bounds, years
GENDERS: tuple[str, ...] = ("f", "m", "x")
# Activity by two-hour slot of the (UTC) day: evenings are busier.
SLOT_WEIGHTS: tuple[float, ...] = (0.4, 0.2, 0.15, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.3, 1.5, 1.0)

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch",
           "sh", "br", "kr", "tr", "st", "pl")  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "a", "ai", "ou")
_CODAS = ("", "", "", "", "", "n", "r", "l", "s", "m", "k", "x")


@dataclass(frozen=True)
class WorldConfig:
    """Every parameter of the synthetic world; the same config and seed give the same files."""

    users: int
    items: int
    days: int
    topics: int
    seed: int = 0
    start_time: int = START_TIME  # Unix seconds UTC of day 0's midnight
    countries: tuple[tuple[str, str, float], ...] = COUNTRIES
    content_dim: int = 32
    # topic interest: theta_u = w * softmax(demographics) + (1 - w) * personal taste
    demographic_weight: float = 0.4
    topic_popularity_zipf: float = 0.8  # global topic popularity ~ rank^-s
    region_affinity_scale: float = 1.5
    age_affinity_scale: float = 1.5
    gender_affinity_scale: float = 0.6
    personal_topics: int = 6  # slots of the sparse personal taste
    personal_alpha: float = 0.5  # Dirichlet concentration over the slots
    # activity: sessions per day ~ Poisson(lambda_u), lambda_u lognormal with this mean
    activity_mean: float = 0.5
    activity_sigma: float = 1.0
    max_sessions_per_day: int = 6
    slot_weights: tuple[float, ...] = SLOT_WEIGHTS
    # catalog
    words_per_topic: int = 30
    word_zipf: float = 1.0
    title_words_min: int = 3
    title_words_max: int = 7
    title_channel_token_prob: float = 0.3
    items_per_channel: float = 40.0
    channel_size_sigma: float = 1.5
    channel_topic_share: float = 0.8  # share of a channel's videos on its home topic
    pre_window_share: float = 0.3  # videos uploaded during the year before day 0
    pre_window_days: int = 365
    quality_sigma: float = 1.5
    duration_median: float = 360.0  # seconds
    duration_sigma: float = 0.8
    duration_min: float = 60.0
    duration_max: float = 1800.0
    channel_offset_scale: float = 0.5
    embedding_noise: float = 0.5
    # item weights w(i) = q_i * fresh(i, d) * (B if same region) * [uploaded before day d]
    fresh_boost: float = 8.0  # A
    fresh_tau_days: float = 2.0  # tau
    region_boost: float = 3.0  # B
    # sessions
    search_prob_start: float = 0.3
    search_prob: float = 0.08
    continue_prob: float = 0.85
    max_steps: int = 20
    search_theme_prob: float = 0.5
    query_word_probs: tuple[float, ...] = (0.5, 0.35, 0.15)  # P(1, 2, 3 words)
    # next watch: mixture weights
    search_mix: float = 0.7  # after a search: search component share
    topic_mix: float = 0.5  # after a watch: previous topic's share
    base_topic_share: float = 0.85  # P_base: interest-topic share (rest: global)
    # watch fraction ~ Beta(mean m, concentration c), m rises with theta_u[topic]
    fraction_mean_min: float = 0.15
    fraction_mean_max: float = 0.9
    fraction_half_interest: float = 3.0  # theta * topics at which m is half-way
    fraction_concentration: float = 4.0

    def __post_init__(self) -> None:
        for name in ("users", "items", "days", "topics"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"WorldConfig.{name} must be a positive integer, got {value!r}")
        if self.region_boost < 1.0:
            raise ValueError(f"region_boost must be >= 1, got {self.region_boost}")
        if not self.countries:
            raise ValueError("countries must not be empty")
        if len(self.slot_weights) != 12:
            raise ValueError("slot_weights needs one weight per two-hour slot (12)")
        if not 1 <= self.max_sessions_per_day <= 12:
            raise ValueError("max_sessions_per_day must be in 1..12 (one per two-hour slot)")
        if not 1 <= self.title_words_min <= self.title_words_max <= self.words_per_topic:
            raise ValueError("need 1 <= title_words_min <= title_words_max <= words_per_topic")
        if not 1 <= len(self.query_word_probs) <= self.words_per_topic:
            raise ValueError("query_word_probs needs 1..words_per_topic entries")

    @property
    def regions(self) -> tuple[str, ...]:
        """Region names, in first-seen order of ``countries``."""
        return tuple(dict.fromkeys(region for _, region, _ in self.countries))

    @property
    def end_time(self) -> int:
        """Unix seconds at which the simulated window ends."""
        return self.start_time + self.days * DAY

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WorldConfig:
        """Rebuild from :meth:`to_dict` output (lists from JSON become tuples)."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                continue
            if key == "countries":
                kwargs[key] = tuple((str(c), str(r), float(w)) for c, r, w in value)
            else:
                kwargs[key] = tuple(value) if isinstance(value, list) else value
        return cls(**kwargs)


PRESETS: dict[str, WorldConfig] = {
    # ~25k events in about a second: for tests
    "tiny": WorldConfig(users=300, items=1_500, days=14, topics=12, activity_mean=1.0),
    # ~500k events: for demos and the documentation's numbers
    "demo": WorldConfig(users=5_000, items=20_000, days=60, topics=40, activity_mean=0.28),
    # 10M+ events: for benchmarks
    "bench": WorldConfig(users=100_000, items=1_000_000, days=30, topics=200, activity_mean=0.6),
}


def world_config(
    preset: str,
    seed: int = 0,
    users: int | None = None,
    items: int | None = None,
    days: int | None = None,
) -> WorldConfig:
    """A preset's config with the seed and optional size overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    overrides: dict[str, Any] = {"seed": seed}
    for name, value in (("users", users), ("items", items), ("days", days)):
        if value is not None:
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
            overrides[name] = value
    config = replace(PRESETS[preset], **overrides)
    check_window(config)
    return config


def check_window(config: WorldConfig) -> None:
    """Raise ValueError if the window ends in the future (validation rejects such logs)."""
    limit = int(time.time()) + DAY
    if config.end_time > limit:
        last_day = (limit - config.start_time) // DAY
        raise ValueError(
            f"{config.days} days from start_time {config.start_time} end after tomorrow; "
            f"datasets may not hold future timestamps: use at most {last_day} days or an "
            "earlier start_time"
        )


def rng_for(config: WorldConfig, *stream: int) -> np.random.Generator:
    """An independent random stream for one purpose (and day), fixed by the seed."""
    return np.random.default_rng([config.seed, *stream])


@dataclass
class World:
    """The hidden parameters of a synthetic world; item arrays follow ``items.parquet`` rows.

    theta (a user's topic interest, ``[num_users, topics]``) is kept factored:
    ``w * demographic_theta[user_group] + (1 - w) * sum_s personal_weights[:, s] *
    onehot(personal_topics[:, s])``; see :meth:`theta`.
    """

    config: WorldConfig
    item_topic: np.ndarray  # [I] int32
    item_region: np.ndarray  # [I] int32, the uploading channel's home region
    item_quality: np.ndarray  # [I] float64
    item_upload_day: np.ndarray  # [I] int64, floor((upload_time - start_time) / DAY)
    item_channel: np.ndarray  # [I] int32
    title_offsets: np.ndarray  # [I + 1] int64 into title_words
    title_words: np.ndarray  # word ids of each title (distinct within a title)
    vocabulary: np.ndarray  # [V] str; topic k's words are ids k*words_per_topic + 0..
    topic_category: np.ndarray  # [T] int32 into category_names
    category_names: np.ndarray  # [C] str
    user_region: np.ndarray  # [U] int32
    user_group: np.ndarray  # [U] int32 (region, age bucket, gender) cell
    user_activity: np.ndarray  # [U] float64, mean sessions per day before the cap
    demographic_theta: np.ndarray  # [G, T] float64, rows sum to 1
    personal_topics: np.ndarray  # [U, K] int32
    personal_weights: np.ndarray  # [U, K] float64, rows sum to 1
    _word_ids: dict[str, int] | None = None

    @property
    def num_items(self) -> int:
        """Number of videos."""
        return len(self.item_topic)

    @property
    def num_topics(self) -> int:
        """Number of topics."""
        return self.config.topics

    def theta(self, users: np.ndarray) -> np.ndarray:
        """Topic interest of ``users`` (indices): ``[len(users), topics]`` float64."""
        w = self.config.demographic_weight
        out = w * self.demographic_theta[self.user_group[users]]
        rows = np.arange(len(users))[:, None]
        np.add.at(out, (rows, self.personal_topics[users]), (1 - w) * self.personal_weights[users])
        return out

    def theta_at(self, users: np.ndarray, topics: np.ndarray) -> np.ndarray:
        """``theta[users[j], topics[j]]`` for each j, without building whole rows."""
        w = self.config.demographic_weight
        demo = self.demographic_theta[self.user_group[users], topics]
        hit = self.personal_topics[users] == topics[:, None]
        return w * demo + (1 - w) * (self.personal_weights[users] * hit).sum(axis=1)

    def word_id(self, word: str) -> int:
        """The vocabulary id of ``word``, or -1 if the world never uses it."""
        if self._word_ids is None:
            self._word_ids = {str(w): i for i, w in enumerate(self.vocabulary.tolist())}
        return self._word_ids.get(word, -1)

    def save(self, truth_path: Path, world_path: Path) -> None:
        """Write the arrays (``.npz``, no pickle) and the config (``world.json``)."""
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name[0] != "_"}
        arrays.pop("config")
        write_npz(truth_path, arrays)
        world_path.write_text(
            json.dumps(
                {
                    "format": WORLD_FORMAT,
                    "version": WORLD_VERSION,
                    "config": self.config.to_dict(),
                    "regions": list(self.config.regions),
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def load(cls, truth_path: Path, config: WorldConfig) -> World:
        """Read the arrays written by :meth:`save`."""
        with np.load(truth_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return cls(config=config, **arrays)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed ``.npz`` that is byte-identical for identical arrays.

    ``np.savez`` stamps every member with the current time; fixed stamps keep a seed's
    files reproducible. No pickle: object arrays are refused.
    """
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def base_weights(
    config: WorldConfig, quality: np.ndarray, upload_day: np.ndarray, day: int
) -> np.ndarray:
    """Region-free item weights on ``day``: ``q * fresh * [uploaded before day]``.

    Shared by the simulator and the oracle so that both use the very same floats.
    """
    available = upload_day < day
    age = np.maximum(day - upload_day - 1, 0).astype(np.float64)
    fresh = 1.0 + config.fresh_boost * np.exp(-age / config.fresh_tau_days)
    return np.where(available, quality * fresh, 0.0)


@dataclass
class SampledWorld:
    """The hidden world plus the public tables drawn from it."""

    world: World
    users: pd.DataFrame
    items: pd.DataFrame
    content_embeddings: np.ndarray  # [I, content_dim] float32, L2-normalised


def _ids(prefix: str, n: int, min_width: int) -> pa.Array:
    """``prefix`` + zero-padded 0..n-1, built in Arrow (fast for millions)."""
    width = max(min_width, len(str(max(n - 1, 0))))
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _arrow_series(values: pa.Array) -> pd.Series:
    """An Arrow-backed pandas column (zero-copy into the writer)."""
    return pd.Series(values, dtype=pd.ArrowDtype(values.type))


def make_words(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct made-up, pronounceable lowercase words (mostly 2 syllables)."""
    onsets, vowels, codas = np.array(_ONSETS), np.array(_VOWELS), np.array(_CODAS)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        m = 2 * (n - len(out)) + 16
        word = np.full(m, "", dtype="<U16")
        syllables = np.where(rng.random(m) < 0.75, 2, 3)
        for s in range(3):
            syllable = np.strings.add(
                onsets[rng.integers(0, len(onsets), m)], vowels[rng.integers(0, len(vowels), m)]
            )
            word = np.where(s < syllables, np.strings.add(word, syllable), word)
        word = np.strings.add(word, codas[rng.integers(0, len(codas), m)])
        for w in word.tolist():
            if w not in seen and len(out) < n:
                seen.add(w)
                out.append(w)
    return out


def _age_affinity(rng: np.random.Generator, buckets: int, topics: int) -> np.ndarray:
    """``[buckets, topics]``: a smooth trend across ages per topic plus some noise.

    Tastes drift with age (gaming young, news old), so neighbouring age buckets are alike.
    """
    position = (np.asarray(AGE_BUCKETS[:buckets], dtype=np.float64)[:, None] - 35.0) / 25.0
    return position * rng.normal(size=(1, topics)) + 0.5 * rng.normal(size=(buckets, topics))


def _zipf_probs(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return p / p.sum()


def _lognormal_mean(rng: np.random.Generator, mean: float, sigma: float, n: int) -> np.ndarray:
    """Lognormal draws whose mean is ``mean``."""
    return mean * np.exp(rng.normal(-0.5 * sigma**2, sigma, size=n))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@dataclass(frozen=True)
class _Topics:
    """Topic popularity and the named categories topics are grouped into."""

    logpop: np.ndarray  # [topics]
    pop: np.ndarray  # [topics], sums to 1
    category: np.ndarray  # [topics] -> category index
    category_names: np.ndarray  # [categories]


@dataclass(frozen=True)
class _Users:
    """Users' demographics, demographic cell, interests and activity."""

    country: np.ndarray
    region: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    group: np.ndarray
    demographic_theta: np.ndarray
    personal_topics: np.ndarray
    personal_weights: np.ndarray
    activity: np.ndarray


@dataclass(frozen=True)
class _Videos:
    """Channels and videos in public (upload) order."""

    n_channels: int
    channel_region: np.ndarray
    channel: np.ndarray
    topic: np.ndarray
    quality: np.ndarray
    duration: np.ndarray
    upload_time: np.ndarray


def _sample_topics(config: WorldConfig) -> _Topics:
    """Topics: Zipf popularity in a random order; grouped into contiguous named categories."""
    n_topics = config.topics
    rng = rng_for(config, 0, 0)
    topic_logpop = config.topic_popularity_zipf * -np.log(rng.permutation(n_topics) + 1.0)
    topic_pop = np.exp(topic_logpop) / np.exp(topic_logpop).sum()
    n_categories = max(1, round(n_topics / 4))
    topic_category = (np.arange(n_topics) * n_categories // n_topics).astype(np.int32)
    category_names = np.array(
        [
            CATEGORY_NAMES[c % len(CATEGORY_NAMES)]
            + ("" if c < len(CATEGORY_NAMES) else f"-{c // len(CATEGORY_NAMES) + 1}")
            for c in range(n_categories)
        ]
    )
    return _Topics(topic_logpop, topic_pop, topic_category, category_names)


def _sample_users(config: WorldConfig, topics: _Topics) -> _Users:
    """Users: country (skewed), age, gender; demographic cell; interests; activity."""
    n_topics, n_regions = config.topics, len(config.regions)
    region_index = {r: i for i, r in enumerate(config.regions)}
    rng = rng_for(config, 0, 1)
    n_users = config.users
    shares = np.array([w for _, _, w in config.countries], dtype=np.float64)
    country = rng.choice(len(shares), size=n_users, p=shares / shares.sum())
    country_region = np.array([region_index[r] for _, r, _ in config.countries], dtype=np.int32)
    user_region = country_region[country]
    age = np.clip(13 + np.exp(rng.normal(np.log(14.0), 0.7, size=n_users)), 13, 80).astype(np.int64)
    age_bucket = np.searchsorted(np.array(AGE_BUCKETS), age, side="right") - 1
    gender = rng.choice(3, size=n_users, p=[0.49, 0.47, 0.04])
    n_ages, n_genders = len(AGE_BUCKETS), len(GENDERS)
    user_group = ((user_region * n_ages + age_bucket) * n_genders + gender).astype(np.int32)
    logits = (
        topics.logpop[None, None, None, :]
        + config.region_affinity_scale * rng.normal(size=(n_regions, 1, 1, n_topics))
        + config.age_affinity_scale * _age_affinity(rng, n_ages, n_topics)[None, :, None, :]
        + config.gender_affinity_scale * rng.normal(size=(1, 1, n_genders, n_topics))
    ).reshape(n_regions * n_ages * n_genders, n_topics)
    demo = np.exp(logits - logits.max(axis=1, keepdims=True))
    n_slots = config.personal_topics
    personal_topics = rng.choice(n_topics, size=(n_users, n_slots), p=topics.pop).astype(np.int32)
    gam = rng.gamma(config.personal_alpha, size=(n_users, n_slots)) + 1e-12
    return _Users(
        country=country,
        region=user_region,
        age=age,
        gender=gender,
        group=user_group,
        demographic_theta=demo / demo.sum(axis=1, keepdims=True),
        personal_topics=personal_topics,
        personal_weights=gam / gam.sum(axis=1, keepdims=True),
        activity=_lognormal_mean(rng, config.activity_mean, config.activity_sigma, n_users),
    )


def _sample_videos(config: WorldConfig, topics: _Topics, user_region: np.ndarray) -> _Videos:
    """Channels (heavy-tailed sizes, a home topic and region each), then their videos.

    Videos get a topic (mostly the channel's), quality, duration and upload time, and are put
    in upload order: public ids grow with time like a real platform's.
    """
    n_topics, n_regions = config.topics, len(config.regions)
    rng = rng_for(config, 0, 2)
    n_items = config.items
    n_channels = max(1, round(n_items / config.items_per_channel))
    region_share = np.bincount(user_region, minlength=n_regions) + 1.0
    channel_topic = rng.choice(n_topics, size=n_channels, p=topics.pop)
    channel_region = rng.choice(n_regions, size=n_channels, p=region_share / region_share.sum())
    size = np.exp(rng.normal(0, config.channel_size_sigma, size=n_channels))
    item_channel = rng.choice(n_channels, size=n_items, p=size / size.sum()).astype(np.int32)

    on_home = rng.random(n_items) < config.channel_topic_share
    item_topic = np.where(
        on_home, channel_topic[item_channel], rng.choice(n_topics, size=n_items, p=topics.pop)
    )
    item_quality = np.exp(rng.normal(0, config.quality_sigma, size=n_items))
    duration = np.clip(
        np.round(
            config.duration_median * np.exp(rng.normal(0, config.duration_sigma, size=n_items))
        ),
        config.duration_min,
        config.duration_max,
    )
    before = rng.random(n_items) < config.pre_window_share
    before[0] = True  # something must be watchable on day 0
    upload_time = np.where(
        before,
        config.start_time - rng.integers(1, config.pre_window_days * DAY, size=n_items),
        config.start_time + rng.integers(0, config.days * DAY, size=n_items),
    ).astype(np.int64)
    order = np.lexsort((rng.random(n_items), upload_time))
    return _Videos(
        n_channels=n_channels,
        channel_region=channel_region,
        channel=item_channel[order],
        topic=item_topic[order].astype(np.int32),
        quality=item_quality[order],
        duration=duration[order],
        upload_time=upload_time[order],
    )


def sample_world(config: WorldConfig) -> SampledWorld:
    """Draw the static world: users, channels, videos and their hidden parameters."""
    topics = _sample_topics(config)
    users = _sample_users(config, topics)
    videos = _sample_videos(config, topics, users.region)

    # Vocabulary: words_per_topic words per topic (ranked: Zipf use), then one per channel.
    n_topic_words = config.topics * config.words_per_topic
    vocabulary = np.array(make_words(n_topic_words + videos.n_channels, rng_for(config, 0, 3)))
    title_offsets, title_words = _titles(config, videos.topic, videos.channel, n_topic_words)
    content = _content_embeddings(
        config, topics.category, videos.topic, videos.channel, videos.n_channels
    )

    world = World(
        config=config,
        item_topic=videos.topic,
        item_region=videos.channel_region[videos.channel].astype(np.int32),
        item_quality=videos.quality,
        item_upload_day=(videos.upload_time - config.start_time) // DAY,
        item_channel=videos.channel,
        title_offsets=title_offsets,
        title_words=title_words,
        vocabulary=vocabulary,
        topic_category=topics.category,
        category_names=topics.category_names,
        user_region=users.region.astype(np.int32),
        user_group=users.group,
        user_activity=users.activity,
        demographic_theta=users.demographic_theta,
        personal_topics=users.personal_topics,
        personal_weights=users.personal_weights,
    )
    user_table = _users_table(config, users)
    item_table = _items_table(config, topics, videos, vocabulary, title_offsets, title_words)
    return SampledWorld(world, user_table, item_table, content)


def _users_table(config: WorldConfig, users: _Users) -> pd.DataFrame:
    """The public ``users`` table."""
    codes = np.array([c for c, _, _ in config.countries])
    return pd.DataFrame(
        {
            "user_id": _arrow_series(_ids("u", len(users.age), 6)),
            "country": _arrow_series(pa.array(codes[users.country])),
            "region": _arrow_series(pa.array(np.array(config.regions)[users.region])),
            "age": users.age,
            "gender": _arrow_series(pa.array(np.array(GENDERS)[users.gender])),
        }
    )


def _items_table(
    config: WorldConfig,
    topics: _Topics,
    videos: _Videos,
    vocabulary: np.ndarray,
    title_offsets: np.ndarray,
    title_words: np.ndarray,
) -> pd.DataFrame:
    """The public ``items`` table: ids, channel, category, title, upload time, duration."""
    title_list = pa.ListArray.from_arrays(
        pa.array(title_offsets.astype(np.int32)), pa.array(vocabulary).take(pa.array(title_words))
    )
    return pd.DataFrame(
        {
            "item_id": _arrow_series(_ids("v", config.items, 7)),
            "channel": _arrow_series(
                _ids("c", videos.n_channels, 5).take(pa.array(videos.channel))
            ),
            "category": _arrow_series(
                pa.array(topics.category_names[topics.category[videos.topic]]).cast(pa.string())
            ),
            "title": _arrow_series(pc.binary_join(title_list, " ")),
            "upload_time": videos.upload_time,
            "duration": videos.duration.astype(np.float32),
        }
    )


def _titles(
    config: WorldConfig, item_topic: np.ndarray, item_channel: np.ndarray, first_channel_word: int
) -> tuple[np.ndarray, np.ndarray]:
    """Title word ids: 3-7 distinct topic words (Zipf), maybe the channel's name token."""
    rng = rng_for(config, 0, 4)
    n_items, per_topic, max_title = len(item_topic), config.words_per_topic, config.title_words_max
    log_p = np.log(_zipf_probs(per_topic, config.word_zipf))
    n_words = rng.integers(config.title_words_min, max_title + 1, size=n_items)
    with_channel = rng.random(n_items) < config.title_channel_token_prob
    picks = np.empty((n_items, max_title), dtype=np.int64)
    chunk = 1 << 16
    for lo in range(0, n_items, chunk):
        # Gumbel top-k: L distinct words per title, in Zipf-weighted random order.
        keys = log_p - np.log(-np.log(rng.random((min(chunk, n_items - lo), per_topic))))
        picks[lo : lo + chunk] = np.argsort(-keys, axis=1)[:, :max_title]
    ids = item_topic[:, None].astype(np.int64) * per_topic + picks
    ids = np.concatenate([ids, (first_channel_word + item_channel)[:, None]], axis=1)
    keep = np.arange(max_title + 1)[None, :] < n_words[:, None]
    keep[:, max_title] = with_channel
    counts = keep.sum(axis=1)
    offsets = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, ids[keep].astype(np.int32)


def _content_embeddings(
    config: WorldConfig,
    topic_category: np.ndarray,
    item_topic: np.ndarray,
    item_channel: np.ndarray,
    n_channels: int,
) -> np.ndarray:
    """Topic centroid + channel offset + noise, L2-normalised: a noisy multimodal encoder."""
    rng = rng_for(config, 0, 5)
    dim = config.content_dim
    category_dir = _unit(rng.normal(size=(int(topic_category.max()) + 1, dim)))
    topic_dir = _unit(
        category_dir[topic_category] + 0.8 * _unit(rng.normal(size=(len(topic_category), dim)))
    )
    channel_off = config.channel_offset_scale * _unit(rng.normal(size=(n_channels, dim)))
    out = np.empty((len(item_topic), dim), dtype=np.float32)
    chunk = 1 << 17
    for lo in range(0, len(item_topic), chunk):
        sl = slice(lo, lo + chunk)
        noise = rng.normal(
            scale=config.embedding_noise / np.sqrt(dim), size=(len(item_topic[sl]), dim)
        )
        out[sl] = _unit(topic_dir[item_topic[sl]] + channel_off[item_channel[sl]] + noise)
    return out
