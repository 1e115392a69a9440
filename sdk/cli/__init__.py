"""The ``runform`` command line: a thin shell over :mod:`runform.api`."""
