"""Who may work the desk: agents, the active staff users. The desk's views and the attachments proxy are
for them only; the role comes from the session, never from anything a request says."""

import functools

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.shortcuts import render

NOT_AN_AGENT = "This account is not a support agent. Ask an administrator to give it staff status."
NOT_LOGGED_IN = "Log in as a support agent first."


def is_agent(user):
    return user.is_authenticated and user.is_active and user.is_staff


def agent_page(view):
    """A page for agents: anyone else is sent to the login page, or told why they may not see it (403)."""

    @functools.wraps(view)
    def page(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_agent(request.user):
            return render(request, "desk/not_an_agent.html", {"reason": NOT_AN_AGENT}, status=403)
        return view(request, *args, **kwargs)

    return page


def refusal(user):
    """The JSON answer for a request an agent did not make: 401 when nobody is logged in, else 403."""
    if not user.is_authenticated:
        return JsonResponse({"error": NOT_LOGGED_IN}, status=401)
    return JsonResponse({"error": NOT_AN_AGENT}, status=403)


def agent_api(view):
    """An endpoint the desk's script (or an <img>) calls: 401 or 403 as JSON for anyone but an agent.

    Works on sync and async views; an async view's user is loaded without blocking the loop.
    """
    if iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_endpoint(request, *args, **kwargs):
            user = await request.auser()
            if not is_agent(user):
                return refusal(user)
            return await view(request, *args, **kwargs)

        return async_endpoint

    @functools.wraps(view)
    def endpoint(request, *args, **kwargs):
        if not is_agent(request.user):
            return refusal(request.user)
        return view(request, *args, **kwargs)

    return endpoint
