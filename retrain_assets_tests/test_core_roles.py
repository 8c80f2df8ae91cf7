"""The registered model's description (`core.roles.registry_description`)."""

from retrain_assets.core.roles import registry_description


def test_the_description_lists_every_alias_in_use_champion_first_with_the_canary_share():
    text = registry_description({"previous": "1", "challenger": "5", "canary": "4", "champion": "2", "pinned": "3"}, 0.2)
    assert text.splitlines() == [
        "Managed by retrain-assets. Aliases in use:",
        "- champion: v2 (answers every request not routed to a canary)",
        "- canary: v4 (on live trial, answering 20% of the entities)",
        "- challenger: v5 (the newest candidate, evaluated against the champion)",
        "- previous: v1 (the champion before, the target of a rollback)",
        "- pinned: v3 (set by hand)",
    ]


def test_a_shadow_trial_and_no_alias_are_said_plainly():
    assert "- shadow: v3 (on live trial, scored on every request, answering none)" in registry_description({"shadow": "3"})
    assert registry_description({}).endswith("- none yet")
