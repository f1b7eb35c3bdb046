"""The demo catalogue generator: a DBQ-shaped catalogue with drawn pictures and planted defects.

Not part of the pipeline: production code reaches it in one place only, where
`CATALOGUE_URI=demo` is resolved (`assets.resources.PipelineSettings.resolved_catalogue_uri`).
Tests and benchmarks use it as their fixture. `python -m demo ROOT` writes one to a folder.
"""

from demo.catalogue import (
    DEMO_ROWS,
    DEMO_SEED,
    DEMO_VERSION,
    INVALID_KINDS,
    DemoCatalogue,
    build_demo_catalogue,
)

__all__ = [
    "DEMO_ROWS",
    "DEMO_SEED",
    "DEMO_VERSION",
    "INVALID_KINDS",
    "DemoCatalogue",
    "build_demo_catalogue",
]
