"""The operator dashboard: ``pesa serve`` at ``/dashboard``, behind its own sign-in.

Server-rendered pages (Jinja2 templates and static files shipped in this package, nothing
from a CDN, no build step) for the people who run a merchant's payments: an overview with
charts, payment search and CSV export, each payment's full timeline, and what needs
attention. Viewers read; operators also act ("ask Daraja now", "resolve flag",
"redeliver"), and every action is audited. Switch it off with ``PESA_DASHBOARD=false``.
See ``docs/dashboard.md``.
"""

from pesa.gateway.dashboard._routes import DASHBOARD_PATH, install_dashboard

__all__ = ["DASHBOARD_PATH", "install_dashboard"]
