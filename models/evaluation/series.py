"""Reading the load series the forecast, scaling and cost evaluations replay.

Data stays where it is shared (never copied into the repository): NAB's
``realAWSCloudwatch`` category (``$M1_NAB_DIR``, default ``../shared/datasets/nab/data``)
and ASD (``$M1_ASD_DIR``, default ``../shared/datasets/asd/data``, one directory per server).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from models.evaluation.cli import REPO, default_nab_data

LOAD_SERIES = re.compile(r"request|elb|cpu", re.IGNORECASE)


def read_series(path: Path) -> tuple[list[float], list[float]]:
    """(epoch-seconds, values) of a ``timestamp,value`` CSV; naive timestamps are UTC."""
    ts, ys = [], []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            when = datetime.fromisoformat(row["timestamp"])
            ts.append((when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp())
            ys.append(float(row["value"]))
    return ts, ys


def default_warmup(n: int) -> int:
    """Warm-up of a series of ``n`` points: its first quarter, at most 1152 (4 days of 5-minute data)."""
    return min(n // 4, 1152)


def default_scaling_data() -> Path:
    """The ``realAWSCloudwatch`` category of the default NAB data directory."""
    return default_nab_data() / "realAWSCloudwatch"


def default_asd_data() -> Path:
    """$M1_ASD_DIR, else the shared ASD corpus beside the repository."""
    env = os.environ.get("M1_ASD_DIR")
    return Path(env) if env else (REPO / ".." / "shared" / "datasets" / "asd" / "data").resolve()


@dataclass(frozen=True)
class LoadSeries:
    """One series read as load: its ``group`` is the fold it belongs to in cross-validation."""

    name: str
    group: str
    ts: list[float]
    values: list[float]


def load_corpus(nab: Path | None, asd: Path | None) -> list[LoadSeries]:
    """The request/ELB/CPU series of ``nab`` (one group, ``nab``) and every series of ``asd``
    (grouped by server directory); a ``None`` directory is left out."""
    out = []
    if nab is not None:
        for path in sorted(p for p in nab.glob("*.csv") if LOAD_SERIES.search(p.stem)):
            out.append(LoadSeries(path.stem, "nab", *read_series(path)))
    if asd is not None:
        for path in sorted(asd.glob("*/*.csv")):
            out.append(LoadSeries(path.stem, path.parent.name, *read_series(path)))
    return out
