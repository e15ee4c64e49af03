"""``python -m shopstream ...`` is the ``shopstream`` command."""

from shopstream.cli.main import entry

if __name__ == "__main__":
    entry()
