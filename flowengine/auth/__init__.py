"""Built-in authentication: users, sessions, passwords, email links, rate limits.

Turned on by an ``auth:`` section in app.yaml; ``service.AuthService`` is what runs on
``services.auth``, and ``flowengine/http/auth_api.py`` serves it as the Altogic client calls it.
"""
