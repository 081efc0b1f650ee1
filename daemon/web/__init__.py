"""The read-only web dashboard served by the daemon's HTTP listener (see ``_server``)."""

from ._http import SECURITY_HEADERS as SECURITY_HEADERS
from ._http import HttpRequest as HttpRequest
from ._http import HttpResponse as HttpResponse
from ._server import Dashboard as Dashboard
from ._stream import event_stream as event_stream

__all__ = ["SECURITY_HEADERS", "Dashboard", "HttpRequest", "HttpResponse", "event_stream"]
