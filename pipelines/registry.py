"""Every stream-processing app of shopstream, by the name ``shopstream run NAME`` takes.

Values are ``"module:function"`` import paths of a ``run(settings) -> None``
function that builds the Quix Streams application and runs it until SIGINT or
SIGTERM. They are imported lazily so one app's imports never slow another.
"""

from __future__ import annotations

APPS: dict[str, str] = {
    # event router and the choreographed services (issue 5)
    "router": "pipelines.router:run",
    "stock": "pipelines.services.apps:run_stock",
    "finance": "pipelines.services.apps:run_finance",
    "customer-relations": "pipelines.services.apps:run_customer_relations",
    "notifications": "pipelines.services.apps:run_notifications",
    # windowed sales, returns and demand; alerts (issue 6)
    "analytics": "pipelines.analytics.app:run",
}
"""name -> "module:function"; filled in by each pipeline module's author."""

UP_ORDER: dict[str, int] = {
    # Services before the router: its first routed events then find their readers joined.
    "stock": 10,
    "finance": 11,
    "customer-relations": 11,
    "notifications": 12,
    "router": 13,
}
"""name -> start order in ``shopstream up`` (lower first; default 20)."""
