"""The shop's reference data, shared by every role that needs to know the shop.

* :mod:`shopstream.shop.world` - the fixed world: product catalog (SKUs, categories,
  prices, opening stock), stores and distribution centres, customers.
* :mod:`shopstream.shop.traffic` - when customers act: daily and weekly curves per
  channel, store hours, flash sales.

The simulators draw events from it; the analytics read categories and expected
traffic from it (events carry neither). It is master data, not a role, so it lives
in the core and imports nothing but the event contracts.
"""
