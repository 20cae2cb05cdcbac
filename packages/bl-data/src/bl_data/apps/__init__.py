"""bl-data's command-line app: `prepare` (`uv run apps/prepare` in a checkout, `bl-prepare` when installed)."""
