"""The core derived-result service: keys, caching, storing in Orthanc, the catalog record,
statuses and lineage of every object radflow derives. Plugins produce; core does the rest
(:func:`producer`)."""

from radflow.results.keys import ResultKey, result_key
from radflow.results.producer import Algorithm, Derived, ProducerContext, producer

__all__ = ["Algorithm", "Derived", "ProducerContext", "ResultKey", "producer", "result_key"]
