"""The SSH transport now lives in the core, :mod:`runform.transport.ssh`, shared by the ``ssh``
and ``vast`` providers. This module keeps the old import path working for third parties."""

from runform.transport.ssh import *  # noqa: F403 - the same names, the very same objects
from runform.transport.ssh import __all__  # noqa: F401
