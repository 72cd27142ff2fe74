"""Reading a stack's `/metrics` as Prometheus would: one scrape, then its samples."""

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import Stack


class Scrape:
    """The samples of one scrape of a stack's `/metrics`."""

    def __init__(self, stack: Stack) -> None:
        response = httpx.get(stack.metrics_url, timeout=10)
        response.raise_for_status()
        self.text = response.text
        self._samples = [
            sample
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` that carry `labels` (0 when none does)."""
        return sum(
            sample.value
            for sample in self._samples
            if sample.name == name and _carries(sample.labels, labels)
        )


def _carries(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())
