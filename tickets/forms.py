"""Forms of the desk's pages."""

from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from .agents import NOT_AN_AGENT


class AgentLoginForm(AuthenticationForm):
    """Django's login form, which also turns away accounts that are not agents, saying so."""

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not user.is_staff:
            raise ValidationError(NOT_AN_AGENT, code="not_an_agent")
