"""runform's built-in storage backends: ``file://``, ``s3://`` and ``b2://``, ``wandb://``."""
