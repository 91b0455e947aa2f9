"""Cerulean Studio: the web portal at ``/studio`` (docs/studio.md).

Server-rendered pages (Jinja2 templates in ``templates/``, one stylesheet and one small script
in ``static/``): sign-in, playground, deployments, keys and endpoint, usage, upstreams, batches
(``batches.py``), content filters (``filters.py``) and role assignments (``roles.py``). Every
page works without JavaScript but the playground's streaming, which calls ``/studio/api/chat``
(the session cookie and the ``X-CSRF-Token`` header; never an account key in the page).

The security rules (:mod:`cerulean.services.studio`): the session cookie is HttpOnly,
``SameSite=Strict`` and ``Path=/studio``; every POST needs the session's CSRF token and the
Studio's own origin; every response carries a strict Content-Security-Policy (no inline script,
nothing from elsewhere) and ``Cache-Control: no-store``.
"""

from __future__ import annotations

from cerulean.api.studio.routes import PREFIX, install, router

__all__ = ["PREFIX", "install", "router"]
