"""Sample-data generator: a seeded, deterministic simulation of Northbridge University's prospects and
students, written as the five sources in their real-world formats plus ground truth (docs/sources.md).

Modules: :mod:`.population` (who the people are), :mod:`.journey` (inquiry -> application ->
enrollment -> active -> alumni), one emitter per source (:mod:`.web`, :mod:`.app`, :mod:`.salesforce`,
:mod:`.email`, :mod:`.whatsapp`), :mod:`.sink` (delivery mess and ground truth), :mod:`.simulate` (one
chunk) and :mod:`.runner` (the whole run).
"""

from .rates import MessRates
from .runner import GenerationResult, generate
from .sink import SOURCES, resolvable_flags

__all__ = ["SOURCES", "GenerationResult", "MessRates", "generate", "resolvable_flags"]
