"""Counting and percentiles for the load generator and the report (pure functions, no I/O)."""

import math
from collections import defaultdict


def percentile(values, fraction):
    """The nearest-rank percentile of ``values`` (``fraction`` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(latencies):
    """Count, p50, p99 and max of latencies in seconds, as milliseconds."""
    return {
        "count": len(latencies),
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "max_ms": _ms(max(latencies) if latencies else None),
    }


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 1)


class RequestLog:
    """Each request's kind, outcome and latency, tallied per kind (e.g. new update vs duplicate)."""

    def __init__(self):
        self.latencies = defaultdict(list)
        self.statuses = defaultdict(lambda: defaultdict(int))
        self.accepted = set()  # keys (update ids) answered 2xx at least once
        self.first_start = None
        self.last_end = None

    def add(self, kind, status, started, ended, key=None):
        self.latencies[kind].append(ended - started)
        self.statuses[kind][status] += 1
        if key is not None and isinstance(status, int) and 200 <= status < 300:
            self.accepted.add(key)
        self.first_start = started if self.first_start is None else min(self.first_start, started)
        self.last_end = ended if self.last_end is None else max(self.last_end, ended)

    @property
    def count(self):
        return sum(len(values) for values in self.latencies.values())

    @property
    def elapsed(self):
        return (self.last_end - self.first_start) if self.count else 0.0

    def summary(self, with_log=False):
        """The run's figures; ``with_log``: also its raw ``log``, for ``combine``."""
        log = {"latencies": self.latencies, "statuses": self.statuses, "accepted": sorted(self.accepted)}
        return _summary(self.latencies, self.statuses, self.accepted, self.elapsed, log=log if with_log else None)


def combine(summaries):
    """One summary of several runs (e.g. rounds of one load, taken in turn with another's): their requests
    over the sum of their durations, the gaps between them left out."""
    latencies, statuses, accepted = defaultdict(list), defaultdict(lambda: defaultdict(int)), set()
    for summary in summaries:
        for kind, values in summary["log"]["latencies"].items():
            latencies[kind] += values
        for kind, counts in summary["log"]["statuses"].items():
            for status, count in counts.items():
                statuses[kind][status] += count
        accepted.update(summary["log"]["accepted"])
    return _summary(latencies, statuses, accepted, sum(summary["seconds"] for summary in summaries))


def _summary(latencies, statuses, accepted, elapsed, log=None):
    count = sum(len(values) for values in latencies.values())
    everything = [value for values in latencies.values() for value in values]
    return {
        "requests": count,
        "seconds": round(elapsed, 3),
        "per_second": round(count / elapsed, 1) if elapsed else None,
        **summarize(everything),
        "by_kind": {kind: summarize(values) for kind, values in sorted(latencies.items())},
        "statuses": {kind: dict(counts) for kind, counts in sorted(statuses.items())},
        "distinct_accepted": len(accepted),
        **({"log": log} if log is not None else {}),
    }


def last_receiver_latencies(sent_at, received_at):
    """Per event, the time from its send to its last receiver; events some receiver missed are counted apart.

    ``sent_at``: {event_key: time}; ``received_at``: one {event_key: time} per receiver.
    Returns (latencies in seconds, number of events not received by every receiver).
    """
    latencies, missed = [], 0
    for key, sent in sent_at.items():
        arrivals = [received.get(key) for received in received_at]
        if any(arrival is None for arrival in arrivals):
            missed += 1
            continue
        latencies.append(max(arrivals) - sent)
    return latencies, missed
