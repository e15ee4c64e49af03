"""The guided tour: the course's five models shown on the running system.

:mod:`~tour.scenarios` runs them (``shopstream tour MODEL``, the dashboard's Tour page);
``docs/concepts.md`` maps every concept of the course to where it lives and is seen.
"""
