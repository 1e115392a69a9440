"""pytest plugin: runform's fixtures, available to any project that installs runform.

Each line imports the fixtures of one stand-in; see the modules for their docs.
"""

from __future__ import annotations
