"""The public name of the backends' shared fetch engine (:mod:`._hydrate`, which issue #15 edits in
parallel; it joins :mod:`runform.storage` once that lands). The same module object."""

import sys

from . import _hydrate as _engine

sys.modules[__name__] = _engine
