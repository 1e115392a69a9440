"""The storage toolkit the core and every storage backend share (one copy each).

- :mod:`runform.storage.record`: the fetched-file record, safe joins, the one tree walker;
- :mod:`runform.storage.digest`: content digests (sha256, md5, multipart ETags) and in-flight hashing;
- :mod:`runform.storage.verify`: checking a destination against a manifest;
- :mod:`runform.storage.s3conn`: S3/B2 connection settings and botocore error helpers.

Plugins import these; the core never imports a plugin (``tests/test_import_direction.py``).
Importing this package imports nothing heavy.
"""
