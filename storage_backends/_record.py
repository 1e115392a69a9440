"""Moved to :mod:`runform.storage.record`; this alias keeps ``_hydrate``'s relative import working
until the fetch engine joins the toolkit (issue #15 edits it in parallel). The same module object,
so a patch on one is a patch on the other."""

import sys

from runform.storage import record as _moved

sys.modules[__name__] = _moved
