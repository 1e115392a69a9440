"""A runform plugin that cannot be imported, as happens when a plugin's own dependency is missing."""

raise ImportError(
    "runform_broken_plugin needs the package 'not-installed-anywhere' (deliberately broken)"
)
