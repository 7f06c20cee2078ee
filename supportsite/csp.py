"""A strict Content-Security-Policy on every response but the Django admin's.

The desk's pages load one script and one stylesheet from the site itself and nothing else: no inline
script, style or event handler, no other origin. A text a customer writes that slipped into the page
unescaped could therefore still not run. WebSockets go back to the same host (``connect-src``: browsers
differ on whether ``'self'`` covers ws:/wss:, so the socket's origin is named). The admin keeps its own
templates, which use inline script, so it is left out. A response that sets its own policy (the
attachments proxy's) keeps it.
"""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.exceptions import DisallowedHost
from django.urls import reverse

HEADER = "Content-Security-Policy"

POLICY = (
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "media-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
)


def policy_for(request):
    """The policy for a response to ``request``: POLICY, plus WebSockets to the host the page came from."""
    try:
        socket_origin = f" {'wss' if request.is_secure() else 'ws'}://{request.get_host()}"
    except DisallowedHost:  # the response is the refusal of that host: no socket to allow
        socket_origin = ""
    return "; ".join((*POLICY, f"connect-src 'self'{socket_origin}"))


class ContentSecurityPolicyMiddleware:
    """Adds the policy to every response outside the admin (sync and async, so it costs no thread hop)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return self.protect(request, self.get_response(request))

    async def __acall__(self, request):
        return self.protect(request, await self.get_response(request))

    def protect(self, request, response):
        if HEADER not in response and not request.path.startswith(reverse("admin:index")):
            response[HEADER] = policy_for(request)
        return response
