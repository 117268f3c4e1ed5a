"""The settings object: every setting documented, placeholder secrets refused outside dev mode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from datalab.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    documented = set(re.findall(r"^\| `(DATALAB_[A-Z0-9_]+)` \|", README.read_text(), flags=re.MULTILINE))
    expected = {f"DATALAB_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from the README's table"
    assert documented - expected == set(), "README documents settings that do not exist"


@pytest.mark.parametrize("secret", ["changethis", "CHANGEME", "", "secret"])
def test_placeholder_secret_is_refused_outside_dev_mode(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("DATALAB_SECRET_KEY", secret)
    monkeypatch.delenv("DATALAB_DEV_MODE", raising=False)
    with pytest.raises(ValidationError, match="DATALAB_SECRET_KEY"):
        Settings()


def test_short_secret_is_refused_outside_dev_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_SECRET_KEY", "x" * 31)
    with pytest.raises(ValidationError, match="at least 32"):
        Settings()


def test_dev_mode_allows_the_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_DEV_MODE", "1")
    monkeypatch.delenv("DATALAB_SECRET_KEY", raising=False)
    assert Settings().secret_key == "changethis"


def test_environment_overrides_and_derived_values(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATALAB_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("DATALAB_HOME", str(tmp_path))
    monkeypatch.setenv("DATALAB_DOWNLOAD_URL_TTL_SECONDS", "5")
    settings = Settings()
    assert settings.download_url_ttl_seconds == 5
    assert settings.resolved_database_url == f"sqlite:///{(tmp_path / 'datalab.db').resolve()}"
    assert settings.storage_access_key_id.startswith("AKIA") and len(settings.storage_access_key_id) == 20
    other = Settings(secret_key="t" * 40)
    assert other.storage_secret_access_key != settings.storage_secret_access_key


def test_the_procrastinate_queue_is_refused_on_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_DEV_MODE", "1")
    monkeypatch.setenv("DATALAB_PIPELINE_QUEUE", "procrastinate")
    monkeypatch.delenv("DATALAB_DATABASE_URL", raising=False)
    with pytest.raises(ValueError, match="DATALAB_PIPELINE_QUEUE=procrastinate needs PostgreSQL"):
        Settings()


def test_email_needs_a_from_address_and_the_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_DEV_MODE", "1")
    monkeypatch.setenv("DATALAB_EMAIL_SMTP_HOST", "smtp.example.edu")
    with pytest.raises(ValidationError, match="DATALAB_EMAIL_FROM"):
        Settings()
    monkeypatch.setenv("DATALAB_EMAIL_FROM", "datalab@example.edu")
    monkeypatch.setenv("DATALAB_PUBLIC_URL", "https://datalab.example.edu")
    assert Settings().email_enabled
    monkeypatch.delenv("DATALAB_EMAIL_SMTP_HOST")
    assert not Settings().email_enabled


def test_the_smtp_password_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_DEV_MODE", "1")
    monkeypatch.setenv("DATALAB_EMAIL_SMTP_PASSWORD", "hunter2-smtp-password")
    settings = Settings()
    assert "hunter2-smtp-password" not in repr(settings) and "hunter2-smtp-password" not in str(settings)
    assert settings.email_smtp_password.get_secret_value() == "hunter2-smtp-password"


def test_private_webhook_targets_are_allowed_in_dev_mode_or_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_SECRET_KEY", "s" * 40)
    assert not Settings().webhook_private_targets_allowed
    assert Settings(webhook_allow_private_targets=True).webhook_private_targets_allowed
    assert Settings(dev_mode=True).webhook_private_targets_allowed
    assert Settings().encryption_key != Settings(secret_key="t" * 40).encryption_key


def test_the_training_pairs_are_a_positive_whole_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATALAB_DEV_MODE", "1")
    monkeypatch.delenv("DATALAB_EMATCH_TRAINING_PAIRS", raising=False)
    assert Settings().ematch_training_pairs == 1_000_000
    monkeypatch.setenv("DATALAB_EMATCH_TRAINING_PAIRS", "10000000")
    assert Settings().ematch_training_pairs == 10_000_000
    for refused in ("0", "-5", "1e7", "2.5", "many"):
        monkeypatch.setenv("DATALAB_EMATCH_TRAINING_PAIRS", refused)
        with pytest.raises(ValidationError, match="ematch_training_pairs"):
            Settings()
