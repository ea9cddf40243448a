"""The capacity board (issue 16): the web page tenants, owners and operators open in a browser,
served by the gateway on the API's port under ``/board``.

Theory of operation. Pages are rendered on the server (Jinja2, autoescaped) from the answers
of the gateway's own JSON API, asked in process as the signed-in principal
(``internal.py``): a page shows what the API gives that principal and nothing more, so the
board can never show a role what the API would refuse it. A user signs in once with an API
token; the board keeps a server-side session (``sessions.py``) behind an HttpOnly,
SameSite=Strict cookie (Secure over TLS), and every form carries the session's CSRF token.
The one script is htmx, vendored (``static/``: its version, licence and hash in
``static/VENDORED.md``), so the page works without a CDN on a facility network with no
internet; without JavaScript the forms still post and the pages still render.
"""

from __future__ import annotations

from pilotline.gateway.board.routes import add_board

__all__ = ["add_board"]
