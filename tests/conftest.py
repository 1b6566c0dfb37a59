"""Test-suite configuration.

Hypothesis explores new examples on every local run; under CI (``CI`` set) it is derandomised so
that a landing is judged on a reproducible set, and failures print a reproduction blob.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
