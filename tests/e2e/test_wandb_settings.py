"""The one place runform names W&B's private (``x_``) settings: this test fails loudly when a
wandb upgrade drops or renames one, so the quiet settings are revisited, not silently lost."""

from __future__ import annotations

import wandb
from helpers import REPO
from runform import wandb_support


def test_every_private_setting_runform_uses_still_exists() -> None:
    fields = wandb.Settings.model_fields
    gone = sorted(k for k in wandb_support.PRIVATE_QUIET if k not in fields)
    assert not gone, (f"wandb {wandb.__version__} no longer has {gone}: find the public setting "
                      "that replaces it (or drop it) in sdk/wandb_support.py PRIVATE_QUIET")
    assert all(k.startswith("x_") for k in wandb_support.PRIVATE_QUIET)
    assert not [k for k in wandb_support.PUBLIC_QUIET if k.startswith("x_") or k not in fields]


def test_settings_take_effect_and_no_other_module_names_a_private_setting() -> None:
    s = wandb_support.settings(mode="offline")
    assert s.mode == "offline" and s.x_disable_stats and s.x_disable_meta and not s.x_save_requirements
    assert s.console == "off" and s.disable_git and not s.save_code
    for path in [*REPO.glob("trackers/*.py"), *REPO.glob("storage_backends/*.py"), *REPO.glob("sdk/**/*.py")]:
        if path.name != "wandb_support.py":
            assert '"x_' not in path.read_text(), path
