"""Environment settings shared by the CLI and the service (pydantic-settings, prefix ``NCI_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NCI_", extra="ignore")

    # Folder holding raw dataset copies (``squad-v1.1-dev/``, ``scifact/``, ``cranfield/``).
    datasets: Path | None = None
    # Where downloads and derived artifacts go when a command is not told otherwise.
    home: Path = Path("~/.cache/nci").expanduser()
    # A PostgreSQL database (postgresql://user:password@host/db) holding live updates, shared by
    # replicas; unset: each index keeps them in INDEX/updates/live.sqlite3.
    database_url: SecretStr | None = None


@lru_cache
def get_settings() -> Settings:
    return Settings()
