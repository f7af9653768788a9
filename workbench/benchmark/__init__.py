"""Dev benchmark (hand-written prompts kept when the base model answers them) and probes."""

from workbench.benchmark.probe import ConceptProbe, build_probe, probe_from_corpus, probe_from_devbench
from workbench.benchmark.schema import BasePromptRecord, DevBench, DevConcept, ProbePrompt

__all__ = [
    "BasePromptRecord",
    "ConceptProbe",
    "DevBench",
    "DevConcept",
    "ProbePrompt",
    "build_probe",
    "probe_from_corpus",
    "probe_from_devbench",
]
