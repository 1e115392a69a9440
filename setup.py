"""Maps the design card's folders into the ``runform`` namespace.

``sdk/`` is ``runform``, ``providers/`` is ``runform.providers`` and so on; every
sub-package below them is found automatically, so a new module needs no edit here.
"""

from setuptools import find_packages, setup

ROOTS = {
    "runform": "sdk",
    "runform.providers": "providers",
    "runform.storage_backends": "storage_backends",
    "runform.trackers": "trackers",
}

packages = []
for namespace, folder in ROOTS.items():
    packages.append(namespace)
    packages += [f"{namespace}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
