"""A local stand-in for the Azure Functions host, for machines without Core Tools.

Development tooling only: excluded from deployment by ``.funcignore``. It indexes ``function_app.py`` with
``app.get_functions()`` as the Python worker does and runs its queue, timer and HTTP triggers against Azurite
with the host's semantics (see ``devhost/README.md``). It is our approximation of the host, not the host.
"""

from devhost.host import HostOptions, LocalHost

__all__ = ["HostOptions", "LocalHost"]
