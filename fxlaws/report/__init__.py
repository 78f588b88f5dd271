"""Static model analysis reports: ``Report`` (text, Markdown, JSON, HTML) of an ``Annotation``.

    >>> import fxlaws
    >>> from fxlaws.models import lenet
    >>> model = lenet()
    >>> report = fxlaws.annotate(model, model.example_inputs()).report()
    >>> report.to_json()[:40]
    '{\\n  "counts": {\\n    "rescale": 226\\n  },\\n'

The JSON document follows the versioned schema in :mod:`fxlaws.report.schema` (``SCHEMA``).
"""

from ._report import Report
from .schema import SCHEMA

__all__ = ["Report", "SCHEMA"]
