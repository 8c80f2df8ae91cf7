"""The names of a model's roles, defined once: the registry aliases a rollout moves, the arms the
prediction service routes a request to, and the two sides of an evaluation."""

from __future__ import annotations

from typing import Mapping

CHAMPION, CHALLENGER, PREVIOUS, CANARY, SHADOW = "champion", "challenger", "previous", "canary", "shadow"

# What each alias means, in the order a person reads them.
ROLE_MEANINGS = {CHAMPION: "answers every request not routed to a canary",
                 CANARY: "on live trial, answering its share of the entities",
                 SHADOW: "on live trial, scored on every request, answering none",
                 CHALLENGER: "the newest candidate, evaluated against the champion",
                 PREVIOUS: "the champion before, the target of a rollback"}


def registry_description(aliases: Mapping[str, str], canary_share: float | None = None) -> str:
    """The registered model's description: every alias in use with its version and meaning,
    champion first, then the trials; the others in the registry's order."""
    order = [*ROLE_MEANINGS, *sorted(set(aliases) - set(ROLE_MEANINGS))]
    lines = []
    for alias in (a for a in order if a in aliases):
        meaning = ROLE_MEANINGS.get(alias, "set by hand")
        if alias == CANARY and canary_share:
            meaning = f"on live trial, answering {canary_share:.0%} of the entities"
        lines.append(f"- {alias}: v{aliases[alias]} ({meaning})")
    return "Managed by retrain-assets. Aliases in use:\n" + ("\n".join(lines) if lines else "- none yet")
