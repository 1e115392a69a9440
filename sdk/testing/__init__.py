"""Real stand-ins for runform's peers, for runform's tests and for plugin authors.

- :mod:`runform.testing.sshd`: Debian's OpenSSH sshd on 127.0.0.1 with temporary keys.
- :mod:`runform.testing.vast`: a faithful Vast.ai API stand-in over HTTP.
- :mod:`runform.testing.s3`: moto's S3 server, with a B2 mode.

The fixtures are also a pytest plugin (``pytest11`` entry point ``runform``).
"""
