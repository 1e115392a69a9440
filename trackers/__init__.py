"""runform's built-in trackers: ``jsonl`` (the local default), ``wandb`` and ``none``.

A tracker factory is called as ``factory(config, ctx)`` with the spec's ``tracker`` block
and a :class:`runform.interfaces.TrackerContext`; it returns a
:class:`runform.interfaces.Tracker`.
"""
