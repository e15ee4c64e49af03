"""The topic catalog: every topic and consumer group of shopstream, named once.

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

from dataclasses import dataclass, field
from typing import Literal

CleanupPolicy = Literal["delete", "compact"]
TopicRole = Literal["ingress", "typed", "service", "deadletter", "analytics"]

DAY_MS = 24 * 60 * 60 * 1000
FOREVER = -1


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: name, layout and retention, and what flows through it."""

    name: str
    role: TopicRole
    description: str
    partitions: int = 3
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

    def renamed(self, name: str) -> TopicSpec:
        """The same spec under another name (tests isolate topics this way)."""
        return TopicSpec(
            name=name,
            role=self.role,
            description=self.description,
            partitions=self.partitions,
            cleanup_policy=self.cleanup_policy,
            retention_ms=self.retention_ms,
            retention_bytes=self.retention_bytes,
            event_types=self.event_types,
            key=self.key,
        )


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
    event_types=("StockQuestionAsked",),
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
    event_types=("QuestionAnswered",),
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

ALL_TOPICS: tuple[TopicSpec, ...] = (
    INGRESS_MOBILE, INGRESS_POS, INGRESS_WEB, INGRESS_WAREHOUSE,
    ORDERS, RETURNS, QUESTIONS, RESTOCKS,
    STOCK_EVENTS, STOCK_LEVELS, FINANCE_EVENTS, ANSWERS, NOTIFICATIONS, ALERTS,
    DEAD_LETTERS,
    SALES_BY_CHANNEL, SALES_BY_STORE, TOP_SKUS, RETURNS_STATS, DEMAND, LATE_EVENTS, TICKS,
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
class ConsumerGroup:
    """A consumer group: who reads what. One group per service is pub/sub fan-out."""

    name: str
    reads: tuple[str, ...]
    description: str
    writes: tuple[str, ...] = field(default=())


ROUTER_GROUP = ConsumerGroup(
    "shopstream-router",
    tuple(t.name for t in INGRESS_BY_CHANNEL.values()),
    "Validates, de-duplicates and routes channel events",
    writes=(ORDERS.name, RETURNS.name, QUESTIONS.name, RESTOCKS.name, DEAD_LETTERS.name),
)
STOCK_GROUP = ConsumerGroup(
    "shopstream-stock", (ORDERS.name, RETURNS.name, RESTOCKS.name),
    "Event-sourced inventory: reserves, rejects, releases, replenishes",
    writes=(STOCK_EVENTS.name, STOCK_LEVELS.name, ALERTS.name),
)
FINANCE_GROUP = ConsumerGroup(
    # Reservations carry quantities, not prices: the invoice needs the order itself.
    "shopstream-finance", (ORDERS.name, STOCK_EVENTS.name, RETURNS.name),
    "Invoices reserved orders, refunds returns of invoiced orders",
    writes=(FINANCE_EVENTS.name, ALERTS.name),
)
CUSTOMER_RELATIONS_GROUP = ConsumerGroup(
    "shopstream-customer-relations", (STOCK_EVENTS.name, QUESTIONS.name),
    "Answers stock questions from the stock event log",
    writes=(ANSWERS.name,),
)
NOTIFICATIONS_GROUP = ConsumerGroup(
    "shopstream-notifications", (FINANCE_EVENTS.name, STOCK_EVENTS.name, ANSWERS.name),
    "Tells customers by their channel's medium",
    writes=(NOTIFICATIONS.name,),
)
ANALYTICS_GROUP = ConsumerGroup(
    "shopstream-analytics", (ORDERS.name, RETURNS.name, QUESTIONS.name, STOCK_EVENTS.name),
    "Windowed sales, returns and demand; alerts on spikes and silence",
    writes=(
        SALES_BY_CHANNEL.name, SALES_BY_STORE.name, TOP_SKUS.name, RETURNS_STATS.name,
        DEMAND.name, LATE_EVENTS.name, TICKS.name, ALERTS.name,
    ),
)  # fmt: skip
SINK_GROUP = ConsumerGroup(
    "shopstream-duckdb-sink",
    (ORDERS.name, RETURNS.name, STOCK_EVENTS.name, FINANCE_EVENTS.name, NOTIFICATIONS.name,
     ALERTS.name, DEAD_LETTERS.name, SALES_BY_CHANNEL.name, SALES_BY_STORE.name,
     TOP_SKUS.name, RETURNS_STATS.name, DEMAND.name),
    "Writes read models into DuckDB (CQRS read side; planned, not built yet)",
)  # fmt: skip
REPLAY_GROUP_PREFIX = "shopstream-replay-"
"""Replays from the dashboard use a fresh group ``<prefix><topic>-<timestamp>``."""

ALL_GROUPS: tuple[ConsumerGroup, ...] = (
    ROUTER_GROUP, STOCK_GROUP, FINANCE_GROUP, CUSTOMER_RELATIONS_GROUP,
    NOTIFICATIONS_GROUP, ANALYTICS_GROUP, SINK_GROUP,
)  # fmt: skip
