"""The shop's KPIs, computed from the hub's own rows (no second store of truth)."""
