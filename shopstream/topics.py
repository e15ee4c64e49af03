"""The topic catalog: every topic of shopstream, named once, and :class:`Namespace`.

Consumer groups are not listed here: each app declares its group with what it reads
and writes (:mod:`shopstream.apps`), and the group catalog is derived from those
declarations, so it cannot drift from the apps.

Keys: channel ingress topics are keyed by ``store_id``, and so is every typed and
service topic. The store is shopstream's unit of consistency: an order, its stock
reservation, its invoice, its returns and refunds all share one key, so they
land in one partition, in order, and each stateful service sees them in the
order they happened without a repartition.

Every topic carries explicit ``retention.ms`` and ``retention.bytes``: the
embedded broker omits them from DescribeConfigs otherwise and Quix Streams'
stateful operations fail on the missing key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

CleanupPolicy = Literal["delete", "compact"]
TopicRole = Literal["ingress", "typed", "service", "deadletter", "analytics", "meta"]

DAY_MS = 24 * 60 * 60 * 1000
FOREVER = -1


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: name, layout and retention, and what flows through it."""

    name: str
    role: TopicRole
    description: str
    partitions: int | None = None
    """``None``: the settings' ``partitions`` (every store-keyed topic must have the same
    count, so that a store's events meet in one partition of each: co-partitioning)."""
    cleanup_policy: CleanupPolicy = "delete"
    retention_ms: int = 7 * DAY_MS
    retention_bytes: int = FOREVER
    event_types: tuple[str, ...] = ()
    key: str = "store_id"

    @property
    def config(self) -> dict[str, str]:
        """Topic-level configs sent on creation (always explicit retention)."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
        }

    @property
    def history(self) -> bool:
        """Kept forever: a consumer that starts late can rebuild everything from offset 0.

        Records carry event time as their timestamp, so time-based retention would
        delete backfilled history at once; history topics have none.
        """
        return self.retention_ms == FOREVER and self.retention_bytes == FOREVER

    def renamed(self, name: str) -> TopicSpec:
        """The same spec under another name (see :class:`Namespace`)."""
        return replace(self, name=name)


# --- channel ingress (raw bytes, as the channels sent them) ------------------------
INGRESS_MOBILE = TopicSpec(
    "ingress.mobile", "ingress", "Raw events from the mobile app",
    event_types=("OrderPlaced", "ItemReturned", "StockQuestionAsked"),
)
INGRESS_POS = TopicSpec(
    "ingress.pos", "ingress", "Raw events from point-of-sale terminals",
    event_types=("OrderPlaced", "ItemReturned", "StockQuestionAsked"),
)
INGRESS_WEB = TopicSpec(
    "ingress.web", "ingress", "Raw events from the web store",
    event_types=("OrderPlaced", "ItemReturned", "StockQuestionAsked"),
)
INGRESS_WAREHOUSE = TopicSpec(
    "ingress.warehouse", "ingress", "Raw restock feed from the warehouse",
    event_types=("Restocked",),
)
INGRESS_BY_CHANNEL: dict[str, TopicSpec] = {
    "mobile": INGRESS_MOBILE,
    "pos": INGRESS_POS,
    "web": INGRESS_WEB,
    "warehouse": INGRESS_WAREHOUSE,
}

# --- typed topics (validated by the router, one event type each) ------------------
ORDERS = TopicSpec(
    "orders", "typed", "Validated OrderPlaced events: the full order history",
    retention_ms=FOREVER, event_types=("OrderPlaced",),
)
RETURNS = TopicSpec(
    "returns", "typed", "Validated ItemReturned events",
    retention_ms=FOREVER, event_types=("ItemReturned",),
)
QUESTIONS = TopicSpec(
    "stock-questions", "typed", "Validated StockQuestionAsked events",
    retention_ms=FOREVER, event_types=("StockQuestionAsked",),
)
RESTOCKS = TopicSpec(
    "restocks", "typed", "Validated Restocked events",
    retention_ms=FOREVER, event_types=("Restocked",),
)

# --- service outputs --------------------------------------------------------------
STOCK_EVENTS = TopicSpec(
    "stock.events", "service",
    "Event log of the stock aggregate (reserved, rejected, released, replenished); "
    "the single source of truth for stock levels",
    retention_ms=FOREVER,
    event_types=("StockReserved", "StockRejected", "StockReleased", "StockReplenished"),
)
STOCK_LEVELS = TopicSpec(
    "stock.levels", "service",
    "Latest level per store and SKU (compacted: one record per key survives)",
    cleanup_policy="compact", retention_ms=FOREVER, key="store_id/sku",
)
FINANCE_EVENTS = TopicSpec(
    "finance.events", "service", "Invoices and refunds",
    retention_ms=FOREVER, event_types=("InvoiceIssued", "RefundIssued"),
)
ANSWERS = TopicSpec(
    "customer.answers", "service", "Answers to stock questions",
    retention_ms=FOREVER, event_types=("QuestionAnswered",),
)
NOTIFICATIONS = TopicSpec(
    "notifications", "service", "Messages sent to customers (push, e-mail, receipt)",
    event_types=("NotificationSent",),
)
ALERTS = TopicSpec(
    "alerts", "service", "Operational and business alerts from any service",
    event_types=("Alert",),
)

# --- dead letters -------------------------------------------------------------------
DEAD_LETTERS = TopicSpec(
    "deadletters", "deadletter",
    "Events that failed validation or processing: original key, value, headers and "
    "timestamp plus error.* headers (kind, message, source topic/partition/offset, app)",
    retention_ms=30 * DAY_MS, key="original key",
)

# --- analytics outputs ---------------------------------------------------------------
SALES_BY_CHANNEL = TopicSpec(
    "analytics.sales-by-channel", "analytics",
    "1-minute tumbling windows of orders, units, revenue, average basket per channel",
    key="channel",
)
SALES_BY_STORE = TopicSpec(
    "analytics.sales-by-store", "analytics",
    "1-minute tumbling windows of orders, units, revenue, average basket per store",
)
TOP_SKUS = TopicSpec(
    "analytics.top-skus", "analytics",
    "15-minute windows hopping every minute: units and revenue per SKU", key="sku",
)
RETURNS_STATS = TopicSpec(
    "analytics.returns", "analytics",
    "Returns count, units, refunded amount and return rate per SKU and category", key="sku",
)
DEMAND = TopicSpec(
    "analytics.demand", "analytics",
    "Stock questions per SKU per window, and how many hit an out-of-stock SKU", key="sku",
)
LATE_EVENTS = TopicSpec(
    "analytics.late-events", "analytics",
    "Events that arrived after their window's grace period, with the reason",
)
TICKS = TopicSpec(
    "analytics.ticks", "analytics",
    "Clock ticks that advance idle windows so silent streams still close them",
    key="partition",
)

# --- shopstream's own bookkeeping ---------------------------------------------------
IDENTITY = TopicSpec(
    "shopstream.identity", "meta",
    "Facts about this broker's history: the first broker-id record names the broker "
    "(state stores and read models belong to it), opening-stock records say it was sent",
    partitions=1, retention_ms=FOREVER, key="kind",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    INGRESS_MOBILE, INGRESS_POS, INGRESS_WEB, INGRESS_WAREHOUSE,
    ORDERS, RETURNS, QUESTIONS, RESTOCKS,
    STOCK_EVENTS, STOCK_LEVELS, FINANCE_EVENTS, ANSWERS, NOTIFICATIONS, ALERTS,
    DEAD_LETTERS,
    SALES_BY_CHANNEL, SALES_BY_STORE, TOP_SKUS, RETURNS_STATS, DEMAND, LATE_EVENTS, TICKS,
    IDENTITY,
)  # fmt: skip
TOPICS_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}

ROUTES: dict[str, TopicSpec] = {
    "OrderPlaced": ORDERS,
    "ItemReturned": RETURNS,
    "StockQuestionAsked": QUESTIONS,
    "Restocked": RESTOCKS,
}
"""Where the router sends each valid channel event type."""


@dataclass(frozen=True, slots=True)
class Namespace:
    """Names of topics, groups and app instances; the empty suffix is the real catalog.

    A suffix gives an isolated copy of the whole topology on one broker (``orders`` ->
    ``orders-SUFFIX``, groups and app instances likewise): what tests, benchmarks and
    side-by-side demos run. The one way shopstream renames resources.
    """

    suffix: str = ""

    def name(self, name: str) -> str:
        return f"{name}-{self.suffix}" if self.suffix else name

    def topic(self, spec: TopicSpec) -> TopicSpec:
        return spec.renamed(self.name(spec.name)) if self.suffix else spec

    def topics(self, specs: Iterable[TopicSpec]) -> list[TopicSpec]:
        """Each spec renamed, once (the embedded broker fails a CreateTopics that names a
        topic twice)."""
        return list({s.name: self.topic(s) for s in specs}.values())

    def group(self, group: str) -> str:
        return self.name(group)

    def app(self, name: str) -> str:
        """App instance name: state directory and stable ``transactional.id`` derive from it."""
        return self.name(name)


CATALOG = Namespace()
"""The real topology: catalog names as they are."""
