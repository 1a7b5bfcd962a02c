"""Running a script the way `make run` runs the product: local settings on SQLite, no broker."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_on_sqlite(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run ``script`` (dedented; it calls ``django.setup()`` itself) in a fresh Python process
    against a new SQLite database in ``tmp_path``; ``env`` adds settings."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "CELERY_BROKER_URL": "memory://",
            "DEBUG": "false",
            "LOG_LEVEL": "ERROR",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
