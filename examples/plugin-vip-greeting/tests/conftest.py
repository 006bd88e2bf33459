"""callrouter's test kit: ajam_replay, ajam_client, asterisk_sandbox, engine_factory."""

pytest_plugins = ["router.testing"]
