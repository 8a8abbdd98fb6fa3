"""Serve the reference app in this folder.

    python server.py [--host HOST] [--port PORT] [--dev]

Host and port also come from HOST and PORT (default 127.0.0.1:8000); dev mode (the SMS and
email outbox and flow traces readable under /_dev/) from --dev or FLOWENGINE_DEV=1.
"""

import sys
from pathlib import Path

from flowengine.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", str(Path(__file__).resolve().parent), *sys.argv[1:]]))
