"""Messaging: SMS and email, sent for real in production and kept in an outbox in development.

- ``outbox``: the default provider of both channels, and the readers ``latest``/``messages``;
- ``sms``: ``open_sms(settings, cache)``, Twilio through its official SDK;
- ``email``: ``open_email(settings, cache)``, SMTP with standard MIME messages;
- ``routes``: ``outbox_routes(cache)``, the dev-only HTTP routes reading the outbox.
"""
