"""The compact form in which the store keeps one agent's samples of one trial: columns of doubles, compressed.

A row per second cost ~210 B (a row of JSON) and a latency histogram ~2.4 KB more; a day of 100 agents was
then 2 GB of TCP samples or 21 GB of HTTP ones, and every analysis decoded JSON row by row. A block holds an
agent's whole trial in two zlib'd byte strings: the times and values as float64 columns (a value a sample lacks
is NaN there, so no real value may be NaN), and the histograms as integers, their bucket keys delta-coded.
Written by hand with `array` and `zlib` from the standard library: SQLite has no array type, and numpy would add
its import to every command that opens the store.
"""

from __future__ import annotations

import math
import zlib
from array import array
from collections.abc import Sequence
from typing import TypedDict

from workloads.base import Sample

_LEVEL = 6  # zlib's default: within 5 % of level 9's size at a third of its time on these columns


class Block(TypedDict):
    """What a store row holds: the fields' names, how many samples, and the two encoded columns."""

    fields: list[str]
    count: int
    values: bytes
    histograms: bytes | None


def encode(samples: Sequence[Sample]) -> Block:
    """One agent's samples as a block (in the order given)."""
    fields = sorted({name for s in samples for name in s["values"]})
    flat = array("d")
    for sample in samples:
        values = sample["values"]
        flat.append(sample["t"])
        flat.append(sample["dt"])
        flat.extend(float(values.get(name, math.nan)) for name in fields)
    histograms = None
    if any("histogram" in s for s in samples):
        coded = array("q")
        for sample in samples:
            histogram = sample.get("histogram")
            if histogram is None:
                coded.append(-1)
                continue
            keys = sorted(int(k) for k in histogram)
            coded.append(len(keys))
            last = 0
            for key in keys:
                coded.append(key - last)
                coded.append(histogram[str(key)])
                last = key
        histograms = zlib.compress(coded.tobytes(), _LEVEL)
    return {
        "fields": fields,
        "count": len(samples),
        "values": zlib.compress(flat.tobytes(), _LEVEL),
        "histograms": histograms,
    }


def decode(block: Block) -> list[Sample]:
    """The samples a block was made of, as they were given to `encode`."""
    flat = array("d")
    flat.frombytes(zlib.decompress(block["values"]))
    fields, width = block["fields"], 2 + len(block["fields"])
    samples: list[Sample] = []
    for row in range(block["count"]):
        at = row * width
        values = {name: v for name, v in zip(fields, flat[at + 2 : at + width], strict=True) if v == v}  # not NaN
        samples.append({"t": flat[at], "dt": flat[at + 1], "values": values})
    if block["histograms"] is not None:
        coded = array("q")
        coded.frombytes(zlib.decompress(block["histograms"]))
        at = 0
        for sample in samples:
            buckets = coded[at]
            at += 1
            if buckets < 0:
                continue
            histogram, key = {}, 0
            for _ in range(buckets):
                key += coded[at]
                histogram[str(key)] = coded[at + 1]
                at += 2
            sample["histogram"] = histogram
    return samples
