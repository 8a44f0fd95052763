"""The broker credentials the config names: the password (file or environment variable) and
the TLS context (CA, client certificate and key), each problem named by its key."""

from __future__ import annotations

import os
from typing import Any

from ..config import Config
from ..config.schema import MQTT_MAX_STRING_BYTES
from ..errors import ConfigError


def broker_password(config: Config) -> str | None:
    """The broker password from ``mqtt.password_file`` or ``mqtt.password_env`` (None: neither).

    :raises ConfigError: naming the key, when the file or variable is missing or unusable.
    """
    mqtt = config.mqtt
    if mqtt.password_file and mqtt.password_env:
        raise ConfigError(["mqtt.password_env: set either password_file or password_env, not both"])
    if mqtt.password_env:
        name = mqtt.password_env
        if not name.replace("_", "a").isalnum() or not name.isascii() or name[0].isdigit():
            raise ConfigError(
                [
                    f"mqtt.password_env: {name!r} is not an environment variable name "
                    "(letters, digits and '_', e.g. BIN_AGENT_MQTT_PASSWORD)"
                ]
            )
        value = os.environ.get(name, "")
        if not value:
            raise ConfigError([f"mqtt.password_env: the environment variable {name} is not set or empty"])
        return value
    if not mqtt.password_file:
        return None
    path = config.resolve(mqtt.password_file)
    try:
        with path.open("rb") as file:
            head = file.read(MQTT_MAX_STRING_BYTES + 2)  # the first line is all that counts
        lines = [line.decode("utf-8") for line in head.splitlines()[:1]]
    except FileNotFoundError:
        raise ConfigError([f"mqtt.password_file: {path} not found"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"mqtt.password_file: {path} is not UTF-8 text (a binary file?)"]) from None
    except OSError as exc:
        raise ConfigError([f"mqtt.password_file: cannot read {path} ({exc.strerror or exc})"]) from None
    if not lines or not lines[0]:
        raise ConfigError([f"mqtt.password_file: {path} is empty; its first line is the password"])
    if not lines[0].isprintable():
        raise ConfigError([f"mqtt.password_file: the first line of {path} has control characters"])
    if len(lines[0].encode()) > MQTT_MAX_STRING_BYTES:
        raise ConfigError(
            [
                f"mqtt.password_file: the first line of {path} is longer than "
                f"{MQTT_MAX_STRING_BYTES} bytes (MQTT's limit for a password)"
            ]
        )
    return lines[0]


def broker_tls_context(config: Config) -> Any:
    """The ``ssl.SSLContext`` of ``[mqtt.tls]`` (None: TLS off), with the certificates loaded.

    :raises ConfigError: naming the key of a missing, unreadable or mismatched file.
    """
    from .link import TlsSetupError, tls_context

    tls = config.mqtt.tls
    files = {key: getattr(tls, key) for key in ("ca_file", "cert_file", "key_file")}
    if not tls.enabled:
        stray = [key for key, value in files.items() if value] + (["insecure"] if tls.insecure else [])
        if stray:
            raise ConfigError(
                [
                    f"mqtt.tls.{key}: set while mqtt.tls.enabled is false; set enabled = true to use TLS, or remove it"
                    for key in stray
                ]
            )
        return None
    if bool(tls.cert_file) != bool(tls.key_file):
        missing, given = ("key_file", "cert_file") if tls.cert_file else ("cert_file", "key_file")
        raise ConfigError(
            [f"mqtt.tls.{missing}: required when mqtt.tls.{given} is set (a client certificate needs its private key)"]
        )
    paths = {key: config.resolve(value) if value else None for key, value in files.items()}
    try:
        return tls_context(paths["ca_file"], paths["cert_file"], paths["key_file"], insecure=tls.insecure)
    except TlsSetupError as exc:
        raise ConfigError([f"mqtt.tls.{exc.key}: {exc}"]) from None
