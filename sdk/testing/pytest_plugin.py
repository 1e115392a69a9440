"""pytest plugin: runform's fixtures, available to any project that installs runform.

Each line imports the fixtures of one stand-in; see the modules for their docs.
"""

from __future__ import annotations

import pytest

# the conformance suites' asserts explain themselves in a plugin author's test run
pytest.register_assert_rewrite("runform.testing.conformance")

from runform.testing.sshd import sshd  # noqa: E402, F401
from runform.testing.s3 import (  # noqa: E402, F401
    _runform_s3_servers,
    s3_server,
    s3_server_b2,
    s3_server_conflicts,
    s3_server_ignoring,
)
from runform.testing.vast.fixture import make_vast_standin, vast_provider, vast_standin  # noqa: E402, F401
