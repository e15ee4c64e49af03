"""Errors a user can act on.

A :class:`UserError` is printed by the CLI as one line (what, where, how to fix)
and exits with code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with input, settings or environment that the user can fix.

    The message must read as one complete line, e.g.
    ``no broker at 127.0.0.1:19092 - start one with `shopstream broker```.
    """


class BrokerUnreachable(UserError):
    """No Kafka-API broker answered metadata at the configured address."""

    def __init__(self, address: str, detail: str = "") -> None:
        hint = "start one with `shopstream broker` or set SHOPSTREAM_BROKER_ADDRESS"
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"no broker at {address}{suffix} - {hint}")
        self.address = address
