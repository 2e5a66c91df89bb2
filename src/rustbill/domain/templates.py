"""A provider's spec template: one accessor for the listing (ListProviders) and for the checks of
an order or a price (``validate_spec``), so that both mean the same by "no template".

A plugin without ``spec_template`` has the empty template: no fields, so nothing is checked beyond
the ServerSpec's own limits, and the listing shows no fields. A template is asked once per binding
(a new config or a new plugin version makes a new binding, which asks again); a failing call is not
remembered, so the next use asks again.
"""

from __future__ import annotations

from typing import Any, cast

from ..plugins import Binding, PluginRuntime
from ..plugins.contract import check_spec_template

__all__ = ["empty_template", "spec_template"]


def empty_template() -> dict[str, Any]:
    return {"fields": [], "groups": []}


async def spec_template(runtime: PluginRuntime, binding: Binding) -> dict[str, Any]:
    """The binding's template, memoised on it; the plugin's errors propagate."""
    if "spec_template" not in binding.memo:
        if runtime.has(binding, "spec_template"):
            binding.memo["spec_template"] = await runtime.call(binding, "spec_template", check=check_spec_template)
        else:
            binding.memo["spec_template"] = empty_template()
    return cast(dict[str, Any], binding.memo["spec_template"])
