"""Encoded side tables: the video catalog (candidate features) and user demographics.

Both are plain numpy arrays row-aligned with the dataset's items / users, so a batch's
features are a gather by row index, the same at training, evaluation, export and serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.features import contract as F
from recsys.features.contract import FeatureConfig
from recsys.features.encoder import encode_demographics, encode_texts, tail_window
from recsys.features.vocab import Vocabularies


@dataclass
class ItemTable:
    """The catalog's candidate features, row-aligned with the dataset's items.

    ``title_tokens: [num_items, max_title_tokens]``; ``content_embedding: [num_items, dim]``
    or None; ``upload_time: [num_items]`` Unix seconds (upload age is computed per use).
    """

    item_ids: np.ndarray  # object [num_items]: the dataset's string ids
    item: np.ndarray
    channel: np.ndarray
    category: np.ndarray
    title_tokens: np.ndarray
    upload_time: np.ndarray
    content_embedding: np.ndarray | None

    @classmethod
    def build(
        cls,
        items: pd.DataFrame,
        content_embeddings: np.ndarray | None,
        vocabs: Vocabularies,
        config: FeatureConfig,
    ) -> ItemTable:
        """Encode the catalog ``items`` (a canonical items frame) with ``vocabs``."""
        flat, offsets = encode_texts(items["title"], vocabs)
        starts, ends = offsets[:-1], offsets[1:]
        # Titles keep their first tokens (the head of a title carries its topic).
        ends = np.minimum(ends, starts + config.max_title_tokens)
        title = tail_window(flat, starts, ends, config.max_title_tokens)
        emb = None
        if content_embeddings is not None:
            emb = np.ascontiguousarray(content_embeddings, dtype=np.float32)
        return cls(
            item_ids=items["item_id"].to_numpy(dtype=object),
            item=vocabs.items.lookup(items["item_id"]),
            channel=vocabs.channels.lookup(items["channel"]),
            category=vocabs.categories.lookup(items["category"]),
            title_tokens=title,
            upload_time=items["upload_time"].to_numpy(dtype=np.int64),
            content_embedding=emb,
        )

    def __len__(self) -> int:
        """Number of videos in the catalog."""
        return len(self.item)

    @property
    def content_dim(self) -> int | None:
        """Length of the content embedding, or None without the modality."""
        return None if self.content_embedding is None else int(self.content_embedding.shape[1])

    def features(self, rows: np.ndarray, reference_time: np.ndarray | int) -> dict[str, np.ndarray]:
        """Candidate features of catalog ``rows: [B]`` with upload age at ``reference_time``."""
        rows = np.asarray(rows, dtype=np.int64)
        age_s = np.asarray(reference_time, dtype=np.int64) - self.upload_time[rows]
        out = {
            F.ITEM: self.item[rows],
            F.CHANNEL: self.channel[rows],
            F.CATEGORY: self.category[rows],
            F.TITLE_TOKENS: self.title_tokens[rows],
            F.UPLOAD_AGE: (np.maximum(age_s, 0) / F.SECONDS_PER_DAY).astype(np.float32),
            F.ITEM_INDEX: rows.astype(np.int32),
        }
        if self.content_embedding is not None:
            out[F.CONTENT_EMBEDDING] = self.content_embedding[rows]
        return out


@dataclass
class UserTable:
    """Encoded demographics, row-aligned with a users frame."""

    user_ids: np.ndarray  # object [num_users]
    country: np.ndarray
    region: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    age_known: np.ndarray

    @classmethod
    def build(cls, users: pd.DataFrame, vocabs: Vocabularies) -> UserTable:
        """Encode a canonical users frame (``region`` may be absent)."""
        n = len(users)
        region = users["region"] if "region" in users.columns else pd.Series([None] * n)
        age = pd.to_numeric(users["age"], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        demo = encode_demographics(vocabs, users["country"], region, users["gender"], age)
        return cls(
            user_ids=users["user_id"].to_numpy(dtype=object),
            country=demo[F.COUNTRY],
            region=demo[F.REGION],
            gender=demo[F.GENDER],
            age=demo[F.AGE],
            age_known=demo[F.AGE_KNOWN],
        )

    def features(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Demographic query features of user ``rows: [B]``."""
        rows = np.asarray(rows, dtype=np.int64)
        return {
            F.COUNTRY: self.country[rows],
            F.REGION: self.region[rows],
            F.GENDER: self.gender[rows],
            F.AGE: self.age[rows],
            F.AGE_KNOWN: self.age_known[rows],
        }
