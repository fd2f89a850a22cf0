"""Helpers shared by the flow test files (test_flows*.py): the two builders by name and a
flow's MADE parameters."""

import flowkit

BUILDERS = {"maf": flowkit.maf, "iaf": flowkit.iaf}


def made_parameters(flow):
    return [(name, p) for name, p in flow.named_parameters() if ".made." in name]
