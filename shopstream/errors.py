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

    def __init__(self, address: str, detail: str = "", hint: str = "") -> None:
        hint = hint or "start one with `shopstream broker` or set SHOPSTREAM_BROKER_ADDRESS"
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"no broker at {address}{suffix} - {hint}")
        self.address = address


class BrokerAuthFailed(UserError):
    """The broker answered but refused the SASL credentials of the settings."""

    def __init__(self, address: str, username: str, mechanism: str) -> None:
        super().__init__(
            f"the broker at {address} refused the credentials of user {username!r} "
            f"(SASL {mechanism} authentication failed) - check SHOPSTREAM_SASL_USERNAME "
            f"and SHOPSTREAM_SASL_PASSWORD"
        )
        self.address = address
